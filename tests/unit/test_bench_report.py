"""The pure parts of the benchmark: percentiles, WER, rows, the tables, targets, JSON and README, /proc sums."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import pytest

from bench import report
from bench.load import PhaseResult, RequestRecord, SystemRun, run_phase
from bench.pipeline import PipelineRow
from bench.workload import Clip, Phase
from harness.procfs import (
    RssSampler,
    cpu_ticks,
    descendants,
    parent_pid,
    rss_bytes,
    tree_cpu_seconds,
    tree_rss,
    vm_rss,
)


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert report.percentile(values, 50) == pytest.approx(2.5)
    assert report.percentile(values, 95) == pytest.approx(3.85)
    assert report.percentile(values, 0) == 1.0 and report.percentile(values, 100) == 4.0
    assert report.percentile([7.0], 95) == 7.0
    assert math.isnan(report.percentile([], 50))


def record(text: str, reference: str = "a b c d", latency: float = 1.0, error: str | None = None) -> RequestRecord:
    return RequestRecord("clip", 10.0, reference, latency, text, error)


def test_corpus_wer_pools_words_normalises_numbers_and_counts_failures_as_empty() -> None:
    records = [record("a b c d"), record("a b x d"), record("", error="boom"), record("Press 1.", "press one")]
    assert report.corpus_wer(records) == pytest.approx((0 + 1 + 4 + 0) / 14)
    digits = [record("dial one, 2, 3, 4 now", "dial 1234 now")]
    assert report.corpus_wer(digits) == pytest.approx(4 / 3)  # three words, four wrong
    assert report.corpus_wer(digits, digits_joined=True) == 0.0


def run(system: str, phases: list[PhaseResult], settings: dict[str, str] | None = None, ready: float = 2.0,
        peak: int = 10**9) -> SystemRun:
    return SystemRun(system, ready, phases, settings or {}, peak)


def phase(name: str, concurrency: int, wall: float, latencies: list[float], text: str = "a b c d",
          reference: str = "a b c d", batch: float | None = None) -> PhaseResult:
    records = [record(text, reference, latency) for latency in latencies]
    return PhaseResult(name, concurrency, wall, records, 500_000_000, batch, cpu_s=wall * 1.5)


def test_phase_row_computes_rtfx_latency_wer_and_the_decoding_mode() -> None:
    system = run("ours HTTP json", [phase("load", 2, 5.0, [1.0, 2.0, 3.0], text="a b c", batch=1.5)],
                 {"transport": "http", "beam_size": "5"})
    (row,) = report.rows([system])
    assert row.requests == 3 and row.errors == 0 and row.audio_s == 30.0
    assert row.rtfx == pytest.approx(6.0)
    assert row.p50_s == 2.0 and row.p95_s == pytest.approx(2.9)
    assert row.wer == pytest.approx(0.25)
    assert row.ready_s == 2.0 and row.engine_batch == 1.5 and row.cpu_s == 7.5
    assert (row.mode, row.beam) == ("timestamps", 5)  # ours decodes every format with timestamps
    modes = [report.decoding_mode(run("x", [], settings)) for settings in
             ({"pipeline": "A", "timestamps": "false"}, {"pipeline": "A", "timestamps": "true"}, {"pipeline": "B"})]
    assert modes == ["text", "timestamps", "timestamps"]


def test_failed_requests_are_left_out_of_latency_and_marked_in_the_table() -> None:
    failing = PhaseResult("long", 1, 3.0, [record("a b c d", latency=1.0), record("", latency=0.1, error="x")])
    (row,) = report.rows([run("faster-whisper batched, text", [failing])])
    assert row.errors == 1 and row.p50_s == 1.0
    table = report.format_table([row])
    assert "text!" in table and "some requests failed" in table


def test_table_has_a_header_and_one_aligned_line_per_row() -> None:
    systems = [run("faster-whisper batched, text", [phase("long", 1, 20.0, [20.0])]),
               run("ours gRPC", [phase("load", 8, 10.0, [1.0, 4.0], batch=2.25)], peak=2)]
    table = report.format_table(report.rows(systems)).splitlines()
    assert table[0].split() == ["system", "phase", "c", "audio", "s", "wall", "s", "RTFx", "p50", "s", "p95", "s",
                                "WER", "WER*", "CPU", "s", "peak", "RSS", "batch"]
    assert set(table[1]) == {"-"}
    assert len({len(line) for line in table}) == 1
    assert table[2].split()[:5] == ["faster-whisper", "batched,", "text", "long", "1"]
    assert table[2].split()[-1] == "-"  # no engine batches for a baseline
    assert table[3].split()[-2:] == ["MB", "2.2"] and "500 MB" in table[3] and "0.00%" in table[3]


def long_and_load(ours_json: float = 30.0, ours_verbose: float = 31.0, ours_load: float = 40.0,
                  ours_text: str = "a b c d") -> list[SystemRun]:
    def system(name: str, wall: float, settings: dict[str, str], beam: int = 1, text: str = "a b c d",
               load: float | None = None) -> SystemRun:
        phases = [phase("long", 1, wall, [wall], text)]
        if load is not None:
            phases.append(phase("load", 8, load, [load / 2] * 8, text))
        return run(name, phases, {**settings, "beam_size": str(beam)})

    ours = {"transport": "http"}
    return [system("faster-whisper batched, text", 40.0, {"pipeline": "A", "timestamps": "false"}, load=20.0),
            system("faster-whisper batched, timestamps", 41.0, {"pipeline": "A", "timestamps": "true"}),
            system("faster-whisper sequential", 60.0, {"pipeline": "B"}, load=30.0),
            system(report.OURS_JSON, ours_json, ours, text=ours_text, load=ours_load / 3),
            system(report.OURS_VERBOSE, ours_verbose, ours, text=ours_text)]


def pipeline_rows(cpu_hour: float = 3.0, wall_hour: float = 2.0, lost: int = 0) -> list[PipelineRow]:
    return [PipelineRow("60min", 3600.0, wall_hour, cpu_hour, 400_000_000, 120, 120 - lost, {},
                        [(wall_hour + 0.5, cpu_hour), (wall_hour, cpu_hour + 0.1), (wall_hour - 0.1, cpu_hour - 0.2)],
                        (wall_hour + 1.0, cpu_hour + 0.4)),
            PipelineRow("240min", 14370.0, wall_hour * 4.1, cpu_hour * 4, 900_000_000, 480, 480, {})]


def test_targets_met_with_their_numbers() -> None:
    targets = report.evaluate_targets(report.rows(long_and_load()), pipeline_rows())
    met = {t.goal.split(":")[0]: t.met for t in targets}
    assert met["one long file, beam 1"] is True and met["one long file, beam 5"] is None  # beam 5 not run
    assert [t.met for t in targets[4:]] == [True, True, True, True]
    text = report.format_targets(targets)
    assert "1.33x (30.0 s vs 40.0 s)" in text and "1.32x (31.0 s vs 41.0 s)" in text
    assert "3.00 CPU s per hour, 2.00 s wall" in text and "0 windows lost" in text
    assert "(its first run after the server's start: 3.00 s)" in text  # shown, not judged


def test_targets_not_met() -> None:
    # Ours only 1.2x faster; one word in four wrong (json and verbose agree, WER worse); load 1.67x the queue.
    runs = long_and_load(ours_json=33.4, ours_verbose=34.0, ours_load=54.0, ours_text="a b c x")
    targets = report.evaluate_targets(report.rows(runs), pipeline_rows(cpu_hour=5.0, wall_hour=3.5, lost=1))
    assert [t.met for t in targets if t.met is not None] == [False, False, True, False, False, False]
    assert "1.66x and 1.11x" in report.format_targets(targets)  # 1.667 rounded down
    # A ratio just under its target never reads as the target.
    assert [report._times(r) for r in (1.2467, 1.25, 1.2, 2.0)] == ["1.24x", "1.25x", "1.20x", "2.00x"]


def test_json_round_trips_and_the_readme_block_is_regenerated(tmp_path: Path) -> None:
    runs = long_and_load()
    table = report.rows(runs)
    profile = {"seconds": {"engine_encode": 12.5, "decode": 0.1}, "windows": 21, "resumes": 3, "mean_batch": 5.0,
               "wall": 30.0, "audio_seconds": 600.0}
    document = report.Document({"date": "2026-12-04T10:00:00", "cpu": "AMD EPYC", "cores": 2, "elapsed_s": 600},
                               "design", table, report.evaluate_targets(table, pipeline_rows()), runs,
                               pipeline_rows(), profile)
    path = tmp_path / "results" / "run.json"
    report.write_json(path, document)
    assert report.read_json(path) == document
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{report.README_BEGIN}\nold table\n{report.README_END}\n\nAfter.\n")
    report.update_readme(readme, document, "bench/results/run.json")
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Title") and text.endswith("After.\n")
    assert "Run of 2026-12-04 on AMD EPYC (2 cores)" in text and "`bench/results/run.json`" in text
    assert "| ours HTTP json | timestamps | 1 | long | 1 | 0.3 |" in text
    assert "| encoder | 12.50 |" in text and "| 60min | 1.00 | 2.00 | 3.00 |" in text
    assert "| 2.50 / 3.00, 2.00 / 3.10, 1.90 / 2.80 | 3.00 / 3.40 |" in text  # every run, and the first one
    assert "| 240min | 3.99 |" in text and text.count("| - |") == 1  # a row without a first run
    assert "first run s" in report.format_pipeline(pipeline_rows())
    readme.write_text("no markers")
    with pytest.raises(SystemExit):
        report.update_readme(readme, document, "x")


def test_run_phase_uses_n_clients_and_keeps_clip_order() -> None:
    clips = [Clip(f"c{i}", f"/x/{i}.wav", 1.0 + i, f"text {i}") for i in range(6)]
    active, most = 0, 0
    lock = threading.Lock()

    def transcribe(clip: Clip) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        if clip.name == "c3":
            raise ValueError("bad audio")
        return clip.reference.upper()

    wall, records = run_phase(transcribe, Phase("load", 3, clips))
    assert most == 3 and wall > 0
    assert [r.clip for r in records] == [c.name for c in clips]
    assert records[0].text == "TEXT 0" and records[0].audio_seconds == 1.0 and records[0].latency_s >= 0.02
    assert records[3].error == "ValueError: bad audio" and records[3].text == ""


# --------------------------------------------------------------------------------------------------
# /proc


def fake_proc(root: Path, processes: dict[int, tuple[int, int | None, str]]) -> Path:
    """processes: pid -> (ppid, VmRSS in kB or None for a kernel thread, command name)."""
    for pid, (ppid, rss, name) in processes.items():
        folder = root / str(pid)
        folder.mkdir(parents=True)
        # utime stime cutime cstime (fields 14-17) = pid, 1, 2, 3 ticks
        (folder / "stat").write_text(f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {pid} 1 2 3 20 0\n")
        status = f"Name:\t{name}\nPid:\t{pid}\nPPid:\t{ppid}\n"
        if rss is not None:
            status += f"VmPeak:\t  999999 kB\nVmRSS:\t  {rss} kB\nRssAnon:\t  1 kB\n"
        (folder / "status").write_text(status)
    (root / "self").mkdir()
    (root / "meminfo").write_text("MemTotal: 1 kB\n")
    return root


def test_parent_pid_cpu_and_rss_parsing() -> None:
    assert parent_pid("42 (tritonserver) S 7 42 42 0") == 7
    assert parent_pid("43 (a (weird) name) R 42 43") == 42
    assert cpu_ticks("43 (a (weird) name) R 42 43 43 0 -1 4194560 10 0 0 0 500 70 8 2 20 0 12") == 580
    assert vm_rss("Name:\tx\nVmRSS:\t  2048 kB\n") == 2048 * 1024
    assert vm_rss("Name:\tkthreadd\n") == 0


def test_tree_rss_sums_a_process_and_all_its_descendants(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {
        1: (0, 100, "init"),
        10: (1, 1000, "python serve"),  # the serve process
        11: (10, 2000, "tritonserver"),
        12: (11, 400, "triton_python_backend_stub"),
        13: (11, 300, "triton_python_backend_stub"),
        14: (12, None, "zombie"),
        20: (1, 5000, "unrelated"),
    })
    assert sorted(descendants(10, proc)) == [10, 11, 12, 13, 14]
    assert tree_rss(10, proc) == (1000 + 2000 + 400 + 300) * 1024
    assert tree_rss(12, proc) == 400 * 1024
    assert tree_rss(99, proc) == 0  # gone
    assert rss_bytes(11, proc) == 2000 * 1024 and rss_bytes(14, proc) == 0 and rss_bytes(99, proc) == 0
    ticks = sum(pid + 1 + 2 + 3 for pid in (10, 11, 12, 13, 14))
    assert tree_cpu_seconds(10, proc) == pytest.approx(ticks / os.sysconf("SC_CLK_TCK"))


def test_sampler_peak_is_taken_and_reset_per_phase(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {5: (1, 100, "worker"), 6: (5, 50, "child")})
    sampler = RssSampler(5, interval=60, proc=proc)
    assert sampler.sample() == 150 * 1024
    (proc / "6" / "status").write_text("VmRSS:\t 10 kB\n")
    assert sampler.take_peak() == 150 * 1024  # the earlier sample was higher
    assert sampler.take_peak() == 110 * 1024  # reset to what is resident now
    assert sampler.overall_peak == 150 * 1024
    with RssSampler(5, interval=0.01, proc=proc) as running:
        time.sleep(0.05)
    assert running.overall_peak == 110 * 1024
