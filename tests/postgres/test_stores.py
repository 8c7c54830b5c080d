"""The task and speaker stores on PostgreSQL: the unit tests of the stores that take the `store` fixture run again
here, where `store` is a database on the session's PostgreSQL server (tests/postgres/conftest.py)."""

from __future__ import annotations

import inspect
from types import ModuleType

from tests.unit import test_speaker_store, test_store, test_store_faults


def store_tests(module: ModuleType) -> dict[str, object]:
    return {name: test for name, test in vars(module).items()
            if name.startswith("test_") and callable(test) and "store" in inspect.signature(test).parameters}


for _module in (test_store, test_speaker_store, test_store_faults):
    globals().update(store_tests(_module))
