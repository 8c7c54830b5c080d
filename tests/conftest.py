"""Shared fixtures: real `make serve` processes (Triton + frontend) on free ports (harness.stack), PostgreSQL; and
the markers that sort the tests by what they need (registered in pyproject.toml):

    pytest -m unit           pure: no servers, no network, no PostgreSQL (tests/unit, tests/fuzz)
    pytest -m integration    real servers: tritonserver, PostgreSQL (tests/triton, e2e, browser, postgres)
    pytest -m deploy         linters of the deployment files: hadolint, kubectl kustomize, docker compose config
    pytest -m gpu            an NVIDIA GPU with TensorRT-LLM (skipped without one)

`triton` and `postgres` mark every test that starts tritonserver or uses PostgreSQL, wherever it is.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from harness.stack import Served, free_port, start_served

TESTS = Path(__file__).resolve().parent
# Each folder's markers: the folder says what its tests need.
FOLDER_MARKERS = {
    "unit": ("unit",),
    "fuzz": ("unit",),  # pure; `make fuzz` runs them for minutes instead of seconds
    "postgres": ("integration", "postgres"),
    "triton": ("integration", "triton"),  # the Triton models over gRPC
    "e2e": ("integration", "triton"),  # make serve's processes over HTTP
    "browser": ("integration", "triton"),  # the web page in headless Chromium
    "deploy": ("deploy",),
    "gpu": ("gpu", "triton"),
}
FIXTURE_MARKERS = {"served": "triton", "served_base": "triton", "postgres_url": "postgres"}
# Lines of a stack's log (frontend and Triton together) that a failed test's report shows: in CI, the only trace
# of why a model process or Triton answered as it did.
LOG_TAIL_LINES = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder not in FOLDER_MARKERS:
            raise pytest.UsageError(f"tests/{folder} has no markers: add it to FOLDER_MARKERS in {__file__}")
        names = {*FOLDER_MARKERS[folder], *(FIXTURE_MARKERS[f] for f in item.fixturenames if f in FIXTURE_MARKERS)}
        for name in sorted(names):
            item.add_marker(name)


def pytest_report_header() -> str:
    """What the machine gives the stacks the tests start: in CI's output, the first thing to read beside a failure."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        shm = f"{shutil.disk_usage('/dev/shm').free // 2**20} MB free in /dev/shm"
    except OSError:
        shm = "no /dev/shm"
    return f"machine: {os.cpu_count()} cores, {memory:.0f} GiB memory, {shm}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Served):
                report.sections.append((f"log of {name} (last {LOG_TAIL_LINES} lines of {value.log_path})",
                                        f"{pytest_report_header()}\n{served_log_tail(value)}"))
    return report


def served_log_tail(served: Served, lines: int = LOG_TAIL_LINES) -> str:
    """The end of a stack's log, or why it cannot be read."""
    try:
        return "\n".join(served.log().splitlines()[-lines:])
    except OSError as exc:
        return f"unreadable: {exc}"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The English tiny.en model: fast, for most end-to-end tests."""
    instance = start_served(tmp_path_factory.mktemp("serve-tiny"), "tiny.en")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def served_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The multilingual base model (the `make serve` default): translation, language detection."""
    instance = start_served(tmp_path_factory.mktemp("serve-base"), "base")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL server for the session (TEST_DB_URL, or one started here), or None."""
    from harness.postgres import postgres_server

    with postgres_server(free_port()) as url:
        yield url
