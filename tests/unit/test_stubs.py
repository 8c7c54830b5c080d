"""Dead Python-backend processes of tritonserver, seen through a fake /proc."""

from __future__ import annotations

from pathlib import Path

from whisper_triton.stubs import Child, StubWatch, children, stub_model

STUB = "/cache/backends/python/triton_python_backend_stub"


def test_the_model_of_a_stub_comes_from_its_script() -> None:
    assert stub_model([STUB, "/cache/repository-8001/whisper_engine__tiny.en/1/model.py", "shm", "16"]) == (
        "whisper_engine__tiny.en")
    assert stub_model(["/usr/bin/python3", "x/whisper/1/model.py"]) is None
    assert stub_model([STUB]) is None


def fake_proc(root: Path, parent: int, processes: dict[int, tuple[str, list[str]]], thread: int = 7) -> Path:
    (root / str(parent) / "task" / str(parent)).mkdir(parents=True)
    (root / str(parent) / "task" / str(parent) / "children").write_text("")
    (root / str(parent) / "task" / str(thread)).mkdir()
    (root / str(parent) / "task" / str(thread) / "children").write_text(" ".join(map(str, processes)) + " ")
    for pid, (state, argv) in processes.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(f"{pid} (triton_python b) {state} {parent} 1 1\n")
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + (b"\0" if argv else b""))
    return root


def test_children_of_any_thread_with_state_and_model(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 100, {
        101: ("S", [STUB, "/r/whisper/1/model.py", "region"]),
        102: ("Z", []),
        103: ("S", ["/bin/sh"]),
    })
    assert children(100, proc) == [Child(101, False, "whisper"), Child(102, True, None), Child(103, False, None)]
    assert children(999, proc) == []


def test_a_dead_stub_is_reported_once_after_two_looks() -> None:
    watch = StubWatch()
    assert watch.crashed([Child(1, False, "whisper"), Child(2, False, "whisper_engine__base")]) == []
    dead = [Child(1, False, "whisper"), Child(2, True, None)]
    assert watch.crashed(dead) == []  # maybe being reaped right now
    assert watch.crashed(dead) == ["whisper_engine__base"]
    assert watch.crashed(dead) == []  # the zombie stays: reported once
    # The model is loaded again: a new process; the zombie is still there and changes nothing.
    assert watch.crashed([*dead, Child(3, False, "whisper_engine__base")]) == []
    assert watch.crashed([Child(1, True, None), Child(2, True, None), Child(3, False, "whisper_engine__base")]) == []
    assert watch.crashed([Child(1, True, None), Child(2, True, None), Child(3, False, "whisper_engine__base")]) == [
        "whisper"]


def test_a_stub_stopped_and_reaped_by_triton_is_no_crash() -> None:
    watch = StubWatch()
    watch.crashed([Child(1, False, "diarization")])
    assert watch.crashed([Child(1, True, None)]) == []  # an unload: Triton reaps it at once
    assert watch.crashed([]) == []
    assert watch.crashed([Child(1, True, None)]) == []  # a new process that got the same pid, unknown here
    assert not watch.models
