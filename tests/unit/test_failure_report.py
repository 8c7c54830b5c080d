"""A failed test's report shows the end of the log of each stack it used (tests/conftest.py): in CI the only trace
of what Triton and the frontend did."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.stack import Served
from tests.conftest import LOG_TAIL_LINES, pytest_runtest_makereport


def _report(outcome: str) -> pytest.TestReport:
    return pytest.TestReport("tests/e2e/test_x.py::test_x", ("test_x.py", 1, "test_x"), {}, outcome, None, "call")


def _stack(tmp_path: Path, text: str) -> Served:
    log = tmp_path / "serve.log"
    log.write_text(text)
    return Served(subprocess.Popen(["true"]), 0, 0, log)


def _made(item: SimpleNamespace, report: pytest.TestReport) -> pytest.TestReport:
    wrapper = pytest_runtest_makereport(item)  # type: ignore[arg-type]  # the hook reads funcargs only
    next(wrapper)
    with pytest.raises(StopIteration) as done:
        wrapper.send(report)
    return done.value.value


def test_a_failed_test_shows_the_end_of_its_stacks_log(tmp_path: Path) -> None:
    lines = [f"line {n}" for n in range(200)]
    stack = _stack(tmp_path, "\n".join(lines) + "\n")
    report = _made(SimpleNamespace(funcargs={"limited": stack, "audio": b"x"}), _report("failed"))
    [(title, text)] = report.sections
    assert "limited" in title and str(stack.log_path) in title
    machine, *tail = text.splitlines()
    assert machine.startswith("machine: ") and "cores" in machine
    assert tail == lines[-LOG_TAIL_LINES:]


def test_a_passed_test_adds_nothing(tmp_path: Path) -> None:
    report = _made(SimpleNamespace(funcargs={"served": _stack(tmp_path, "fine\n")}), _report("passed"))
    assert report.sections == []


def test_a_missing_log_says_so(tmp_path: Path) -> None:
    stack = _stack(tmp_path, "")
    stack.log_path.unlink()
    report = _made(SimpleNamespace(funcargs={"served": stack}), _report("failed"))
    assert report.sections[0][1].splitlines()[1].startswith("unreadable:")
