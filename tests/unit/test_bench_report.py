"""The pure parts of the benchmark: percentiles, WER, rows, the table, targets, clip cuts, /proc sums."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import msgspec
import pytest

from bench import report
from bench.load import PhaseResult, RequestRecord, SystemRun, run_phase
from bench.rss import RssSampler, cpu_ticks, descendants, parent_pid, rss_bytes, tree_cpu_seconds, tree_rss
from bench.workload import Clip, Phase, plan_clips
from tests.assets import Piece


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert report.percentile(values, 50) == pytest.approx(2.5)
    assert report.percentile(values, 95) == pytest.approx(3.85)
    assert report.percentile(values, 0) == 1.0 and report.percentile(values, 100) == 4.0
    assert report.percentile([7.0], 95) == 7.0
    assert math.isnan(report.percentile([], 50))


def test_word_errors_use_the_tests_normalisation() -> None:
    assert report.word_errors("And so, my fellow Americans!", "and so my fellow americans") == (0, 5)
    assert report.word_errors("one two three", "one too three four") == (2, 3)
    assert report.word_errors("one two", "") == (2, 2)


def record(text: str, reference: str = "a b c d", latency: float = 1.0, error: str | None = None) -> RequestRecord:
    return RequestRecord("clip", 10.0, reference, latency, text, error)


def test_corpus_wer_pools_words_and_counts_failures_as_empty() -> None:
    records = [record("a b c d"), record("a b x d"), record("", error="boom")]
    assert report.corpus_wer(records) == pytest.approx((0 + 1 + 4) / 12)


def run(system: str, phases: list[PhaseResult], ready: float = 2.0, peak: int = 10**9) -> SystemRun:
    return SystemRun(system, ready, phases, {}, peak)


def phase(name: str, concurrency: int, wall: float, latencies: list[float], text: str = "a b c d",
          reference: str = "a b c d", batch: float | None = None) -> PhaseResult:
    records = [record(text, reference, latency) for latency in latencies]
    return PhaseResult(name, concurrency, wall, records, 500_000_000, batch, cpu_s=wall * 1.5)


def test_phase_row_computes_rtfx_latency_and_wer() -> None:
    system = run("ours HTTP", [phase("clips", 2, 5.0, [1.0, 2.0, 3.0], text="a b c", batch=1.5)])
    (row,) = report.rows([system])
    assert row.requests == 3 and row.errors == 0 and row.audio_s == 30.0
    assert row.rtfx == pytest.approx(6.0)
    assert row.p50_s == 2.0 and row.p95_s == pytest.approx(2.9)
    assert row.wer == pytest.approx(0.25)
    assert row.ready_s == 2.0 and row.engine_batch == 1.5 and row.cpu_s == 7.5


def test_failed_requests_are_left_out_of_latency_and_marked_in_the_table() -> None:
    failing = PhaseResult("jfk", 1, 3.0, [record("a b c d", latency=1.0), record("", latency=0.1, error="x")])
    (row,) = report.rows([run("baseline A", [failing])])
    assert row.errors == 1 and row.p50_s == 1.0
    table = report.format_table([row])
    assert "2!" in table and "some requests failed" in table


def test_table_has_a_header_and_one_aligned_line_per_row() -> None:
    systems = [run("baseline A", [phase("long", 1, 20.0, [20.0])]),
               run("ours gRPC", [phase("clips", 8, 10.0, [1.0, 4.0], batch=2.25)], peak=2)]
    table = report.format_table(report.rows(systems)).splitlines()
    assert table[0].split() == ["system", "phase", "c", "req", "audio", "s", "wall", "s", "RTFx", "p50", "s",
                                "p95", "s", "WER", "peak", "RSS", "ready", "s", "CPU", "s", "batch"]
    assert set(table[1]) == {"-"}
    assert len({len(line) for line in table}) == 1
    assert table[2].split()[:4] == ["baseline", "A", "long", "1"]
    assert table[2].split()[-1] == "-"  # no engine batches for a baseline
    assert table[3].split()[-2:] == ["15.0", "2.2"] and "500 MB" in table[3] and "0.0%" in table[3]


def full_runs(ours_long: float = 19.0, ours_c8: float = 60.0, ours_jfk: float = 0.8, ours_text: str = "a b c d",
              peak: int = 1_500_000_000) -> list[SystemRun]:
    def system(name: str, long: float, c8_wall: float, jfk: float, text: str = "a b c d", size: int = 10**9
               ) -> SystemRun:
        return run(name, [phase("long", 1, long, [long], text), phase("jfk", 1, 5 * jfk, [jfk] * 5, text),
                          phase("clips", 1, 2 * c8_wall, [1.0] * 4, text), phase("clips", 8, c8_wall, [2.0] * 4, text)],
                   peak=size)

    return [system("baseline A", 20.0, 10.0, 0.7), system("baseline B", 40.0, 20.0, 1.0),
            system("ours HTTP", ours_long, 40.0 / ours_c8 * 10, ours_jfk, ours_text, peak),
            system("ours gRPC", ours_long, 40.0 / ours_c8 * 10, ours_jfk, ours_text, peak)]


def evaluate(runs: list[SystemRun], elapsed: float | None = 600.0) -> list[report.Target]:
    return report.evaluate_targets(runs, report.rows(runs), elapsed)


def test_targets_all_met() -> None:
    targets = evaluate(full_runs())
    assert [t.met for t in targets] == [True] * 6
    text = report.format_targets(targets)
    assert "[met    ] single long file" in text and "ours 19.0 s" in text and "A 20.0 s" in text
    assert "+100 ms" in text and "1.50 GB" in text and "10.0 min" in text


def test_targets_not_met_each_with_its_numbers() -> None:
    # Ours: slower on the long file, 3.4 RTFx at 8 clients (A has 4, B 2), 200 ms slower on JFK,
    # one word in four wrong, 3.2 GB.
    targets = evaluate(full_runs(ours_long=25.0, ours_c8=34.0, ours_jfk=0.9, ours_text="a b c x",
                                 peak=3_200_000_000), elapsed=1300.0)
    assert [t.met for t in targets] == [False] * 6
    by_goal = {t.goal.split()[0]: t for t in targets}
    assert "ours/B = 1.70x" in by_goal["throughput"].detail
    assert "+200 ms" in by_goal["added"].detail
    assert "+25.00 points" in by_goal["word"].detail


def test_throughput_below_a_is_not_met_even_at_twice_b() -> None:
    runs = full_runs(ours_c8=38.0)  # ours 3.8 RTFx: 1.9x B and below A
    assert evaluate(runs)[1].met is False
    runs = full_runs(ours_c8=45.0)
    assert evaluate(runs)[1].met is True


def test_targets_without_the_systems_they_compare_are_not_measured() -> None:
    runs = [r for r in full_runs() if r.system == "ours gRPC"]
    targets = evaluate(runs, elapsed=None)
    assert [t.met for t in targets] == [None, None, None, None, True]
    assert "n/a" in report.format_targets(targets)


def test_json_is_written_with_rows_targets_and_runs(tmp_path: Path) -> None:
    runs = full_runs()
    table = report.rows(runs)
    path = tmp_path / "out" / "results.json"
    report.write_json(path, {"threads": 2}, "design", runs, table, evaluate(runs))
    document = msgspec.json.decode(path.read_bytes())
    assert document["meta"] == {"threads": 2} and len(document["rows"]) == 16
    assert document["runs"][0]["phases"][0]["requests"][0]["reference"] == "a b c d"
    assert len(document["targets"]) == 6


def test_plan_clips_cuts_in_the_middle_of_silences_near_each_target() -> None:
    pieces = [Piece(1.0 + 10 * i, 9.0 + 10 * i, f"p{i}") for i in range(10)]  # 8 s speech, 2 s pauses
    cuts = plan_clips(pieces, 101.0, [20, 30, 5])
    assert [(c.start, c.end, c.text) for c in cuts] == [
        (0.0, 20.0, "p0 p1"), (20.0, 50.0, "p2 p3 p4"), (50.0, 60.0, "p5")]
    # The recording runs out: the last cut ends with it.
    assert plan_clips(pieces, 101.0, [95, 95]) == [Piece(0.0, 90.0, " ".join(f"p{i}" for i in range(9))),
                                                   Piece(90.0, 101.0, "p9")]


def test_plan_clips_stops_when_pieces_run_out() -> None:
    pieces = [Piece(1.0, 3.0, "a"), Piece(5.0, 7.0, "b")]
    cuts = plan_clips(pieces, 8.0, [3, 100, 3])
    assert [(c.start, c.end, c.text) for c in cuts] == [(0.0, 4.0, "a"), (4.0, 8.0, "b")]


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

    wall, records = run_phase(transcribe, Phase("clips", 3, clips))
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
    assert rss_bytes("Name:\tx\nVmRSS:\t  2048 kB\n") == 2048 * 1024
    assert rss_bytes("Name:\tkthreadd\n") == 0


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
