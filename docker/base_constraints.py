"""The packages installed in the base image as pip constraints (`name==version` lines), on stdout.

    python3 docker/base_constraints.py > /tmp/base-constraints.txt

`pip list --format=freeze` gave the same lines, but pip refuses a whole constraints file when one line's
version is not PEP 440 (images carry odd builds, e.g. `1.0.0-custom` or `unknown`), and would pin
distributions installed from a local path; those are left out here, named in a comment.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from importlib import metadata

try:
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - every pip vendors packaging
    from pip._vendor.packaging.version import InvalidVersion, Version  # type: ignore[no-redef]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_lines(distributions: Iterable[tuple[str | None, str | None]]) -> list[str]:
    """`name==version` for each (name, version) with a PEP 440 version, sorted, one per name."""
    pins: dict[str, str] = {}
    skipped: list[str] = []
    for name, version in distributions:
        if not name:
            continue
        try:
            Version(version or "")
        except InvalidVersion:
            skipped.append(f"# left out: {name} {version!r} is not a PEP 440 version")
            continue
        pins.setdefault(canonical(name), f"{canonical(name)}=={version}")
    return [*skipped, *(pins[key] for key in sorted(pins))]


def main() -> int:
    installed = ((dist.metadata["Name"], dist.version) for dist in metadata.distributions())
    sys.stdout.write("\n".join(constraint_lines(installed)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
