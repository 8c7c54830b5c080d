"""Everything a request costs but Whisper itself: our pipeline with an engine that answers at once.

    python -m bench.pipeline [--minutes 60,239.5]

Triton runs the real entry model (container decoding, resampling, VAD, windowing, one engine call per
window) against `bench/instant_engine`, which computes each window's log-mel as the engine model does
and answers without running the network. A file goes in over gRPC; measured are the wall time to its
`done` event, the CPU seconds of the whole Triton process tree (server and model processes) during it,
its peak memory, and whether every window came back. Each file runs once untimed (a fresh server's first
long file pays once for growing its buffers: the Python backend's shared memory, the processes' heaps;
that run is kept as `first_run`), then REPEATS times; its row holds the median wall and CPU time of those
(the machine is shared), the fewest windows any run got back, and every run.
On a GPU that transcribes at ~1000x real time, this is the part the host's CPUs must keep up with.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from bench.ours import GrpcTranscriber
from bench.workload import Clip, build_workload
from harness.procfs import RssSampler, tree_cpu_seconds
from harness.stack import free_port
from whisper_triton.contract import DIARIZATION_MODEL, ENGINE_MODEL
from whisper_triton.launcher import Supervisor, TritonServer, TritonSettings

REPO = Path(__file__).resolve().parent.parent


class PipelineRow(msgspec.Struct, frozen=True):
    name: str
    audio_s: float
    wall_s: float
    cpu_s: float  # of the Triton process tree during the request
    peak_rss_bytes: int
    windows: int
    segments: int  # one per window from the instant engine: fewer means windows were lost
    profile: dict[str, object]
    # Every run of the file, (wall s, CPU s): the row holds their medians (the machine is shared and noisy).
    runs: list[tuple[float, float]] = msgspec.field(default_factory=list)
    # The file's first, untimed run on the server (wall s, CPU s): what the first long file after a start costs.
    first_run: tuple[float, float] | None = None

    @property
    def cpu_per_audio_hour(self) -> float:
        return self.cpu_s / (self.audio_s / 3600)

    @property
    def wall_per_audio_hour(self) -> float:
        return self.wall_s / (self.audio_s / 3600)


def source_repository(work_dir: Path) -> Path:
    """A model repository source: the real models (the entry model, live, model management; diarization is
    off) with the instant engine in place of the Whisper engine."""
    source = work_dir / "pipeline-source"
    source.mkdir(parents=True, exist_ok=True)
    models = {path.name: path for path in (REPO / "model_repository").iterdir() if (path / "config.pbtxt").is_file()}
    models[ENGINE_MODEL] = REPO / "bench" / "instant_engine"
    models.pop(DIARIZATION_MODEL, None)
    for name, target in models.items():
        link = source / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return source


REPEATS = 3  # timed runs of each file, after its first run; the row holds the median wall and CPU time, and every
# window of every run


def run_pipeline(clips: list[Clip], warm: Clip, work_dir: Path, repeats: int = REPEATS) -> list[PipelineRow]:
    settings = TritonSettings(grpc_port=free_port(), metrics_port=free_port(),
                              model_repository=str(source_repository(work_dir)))
    env = {**os.environ, "WHISPER_MODEL": "base", "WHISPER_DIARIZATION": "off"}
    server = TritonServer(settings, work_dir / "pipeline-triton", env)
    # Supervised as `make serve` is: a model process that dies (Triton would never end its streams) restarts
    # Triton, so the run fails with the request's error instead of waiting for ever.
    supervisor = Supervisor(server)
    supervisor.start()
    assert server.process is not None
    rows = []
    try:
        with RssSampler(server.process.pid) as memory:
            transcribe = GrpcTranscriber(settings.grpc_url, profile=True)
            transcribe(warm)
            for clip in clips:
                memory.take_peak()
                first, *measured = [_measure(server.process.pid, transcribe, clip) for _ in range(1 + max(1, repeats))]
                median = sorted(measured, key=lambda run: run[0])[len(measured) // 2]
                cpus = sorted(run[1] for run in measured)
                rows.append(PipelineRow(clip.name, clip.duration, median[0], cpus[len(cpus) // 2], memory.take_peak(),
                                        median[2],
                                        min(run[3] for run in [first, *measured]), median[4],
                                        [(round(run[0], 3), round(run[1], 3)) for run in measured],
                                        (round(first[0], 3), round(first[1], 3))))
    finally:
        supervisor.stop()
    return rows


def _measure(pid: int, transcribe: GrpcTranscriber, clip: Clip) -> tuple[float, float, int, int, dict[str, object]]:
    """One run of the file: wall s, CPU s of the tree, windows sent, windows back, the request's profile."""
    cpu, started = tree_cpu_seconds(pid), time.perf_counter()
    text = transcribe(clip)
    wall = time.perf_counter() - started
    cpu = tree_cpu_seconds(pid) - cpu
    print(f"  pipeline {clip.name}: {wall:.2f} s, {cpu:.2f} CPU s", file=sys.stderr, flush=True)
    return wall, cpu, int(str(transcribe.profiles[-1]["windows"])), text.count("window"), transcribe.profiles[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="60,239.5", help="lengths of the files (minutes, comma-separated)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs of each file (the median is reported)")
    args = parser.parse_args()
    workload = build_workload(hours=[float(m) for m in args.minutes.split(",")])
    with tempfile.TemporaryDirectory(prefix="whisper-pipeline-") as tmp:
        rows = run_pipeline(workload.hours, workload.warm, Path(tmp), args.repeats)
    for row in rows:
        print(f"{row.name}: {row.audio_s / 3600:.2f} h of audio in {row.wall_s:.2f} s, {row.cpu_s:.2f} CPU s "
              f"({row.cpu_per_audio_hour:.2f} CPU s per audio hour), peak {row.peak_rss_bytes / 1e6:.0f} MB, "
              f"{row.segments}/{row.windows} windows back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
