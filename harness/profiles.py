"""Hypothesis profiles: few examples in `make test`, many in `make fuzz`.

`HYPOTHESIS_PROFILE=ci` (the default) keeps every property test to a fraction of a second;
`HYPOTHESIS_PROFILE=fuzz` runs thousands of examples per property. Deadlines are off in both: the
machines running the suite are shared and slow, and a timing flake is not a property failure.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = {"ci": 50, "fuzz": 5000}
SLOW_HEALTH_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]


def load_profile() -> str:
    """Registers the profiles once and loads the one named by HYPOTHESIS_PROFILE."""
    for name, examples in PROFILES.items():
        settings.register_profile(name, max_examples=examples, deadline=None, print_blob=True,
                                  suppress_health_check=SLOW_HEALTH_CHECKS)
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(name if name in PROFILES else "ci")
    return name


def fuzz_seconds(default: float) -> float:
    """How long a fuzzer runs: FUZZ_SECONDS, else `default` (the short run of `make test`)."""
    return float(os.environ.get("FUZZ_SECONDS") or default)
