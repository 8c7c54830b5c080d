"""Entry point of the GPU image: TensorRT-LLM engines built on first start, then tritonserver itself.

    python3 docker/triton_entrypoint.py build   build the engines of WHISPER_MODELS if missing (init container)
    python3 docker/triton_entrypoint.py serve   the same, then render the model repository and exec tritonserver

The route is the one the image's TensorRT-LLM supports (`WHISPER_TRTLLM_ROUTE=auto`, whisper_triton/trtllm_route.py):
engines where it has trtllm-build; where it has not (its main branch since mid-2026), its PyTorch backend serves
the Hugging Face checkpoint, which the first start fetches into `$WHISPER_CACHE_DIR/trtllm/hf-checkpoints`
instead of building anything.

Engines go to `$WHISPER_CACHE_DIR/trtllm/<key>/<model id>` (`python -m build_engines all --workdir`), where the
key names everything an engine is valid for only (TensorRT-LLM version, GPU model and compute capability,
build options): a volume shared by pods on different GPUs or images never serves a wrong engine. A file lock
keeps pods that start together on a shared volume from building at once. Each pod renders its own GPU model
repository (build_engines' `render_repository`) into its temporary directory, from the engines and the
WHISPER_TRTLLM_* settings. Unlike `make serve`, nothing supervises tritonserver (no restarts). Without LOG_DIR
it replaces this process, so the container runtime sees its exit and its signals. With LOG_DIR (a volume the
frontend reads too, for `GET /v1/logs`) it runs as a child (`run_logged`): its lines reach this console unchanged
and `triton.log` parsed as `make serve` writes it (whisper_triton.log_files), the runtime's signals are forwarded
to it, and its exit status is this process's.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from importlib import metadata
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import msgspec

from build_engines.build import BuildError
from build_engines.render import SERVE_ENV, RenderOptions, render_repository
from whisper_triton.launcher import TritonError, TritonSettings, allocator_library, with_preload
from whisper_triton.launcher import server_command as launcher_command
from whisper_triton.log_files import (
    TRITON_FILE,
    LogFileSettings,
    RotatingLogFile,
    log_file,
    log_file_settings,
    log_triton_lines,
)
from whisper_triton.models import ModelError, model_id, resolve_model
from whisper_triton.repository import build_repository, model_specs
from whisper_triton.settings import ModelSettings, SettingsError, load_settings, model_settings
from whisper_triton.trtllm_route import resolve_route

log = logging.getLogger("triton_entrypoint")
APP_DIR = Path(__file__).resolve().parent.parent
ENGINES = ("ctranslate2", "tensorrt_llm")
TRITON_LOGGER = "tritonserver"  # the logger of tritonserver's lines in triton.log, as `make serve` names it
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
QUEUED_LINES = 10_000  # lines waiting for a slow disk before they are dropped from the file (never from the console)


class BuildSettings(msgspec.Struct, frozen=True):
    """`BUILD_ENGINES_*`: options of `python -m build_engines`.

    The first four shape the engines (and name their cache folder); the last two only the served
    configuration, rendered at every start.
    """

    dtype: str = "float16"
    weight_only: str = "none"  # none | int8 | int4
    max_batch_size: int = 64
    max_beam_width: int = 4
    instances: int = 1  # engine model instances on the GPU, each with its own executor and KV cache
    workers: int = 2  # batches each instance hands its executor at once (the engine model's scheduler)


def build_settings(environ: Mapping[str, str] | None = None) -> BuildSettings:
    settings = load_settings(BuildSettings, "BUILD_ENGINES_", environ)
    if settings.weight_only not in ("none", "int8", "int4"):
        raise SettingsError("Invalid value for BUILD_ENGINES_WEIGHT_ONLY: must be none, int8 or int4.")
    for name in ("max_batch_size", "max_beam_width", "instances"):
        if getattr(settings, name) < 1:
            raise SettingsError(f"Invalid value for BUILD_ENGINES_{name.upper()}: must be positive.")
    return settings


def engine_of(settings: ModelSettings) -> str:
    if settings.engine not in ENGINES:
        raise SettingsError(f"Invalid value for WHISPER_ENGINE: expected one of {', '.join(ENGINES)}.")
    return settings.engine


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def gpu_identity() -> str:
    """`<gpu name>-sm<compute capability>` of the first GPU; `unknown-gpu` when nvidia-smi cannot tell."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown-gpu"
    if not out:
        return "unknown-gpu"
    name, _, capability = out[0].partition(",")
    return f"{_slug(name)}-sm{capability.strip().replace('.', '')}"


def trtllm_version() -> str:
    try:
        return metadata.version("tensorrt_llm")
    except metadata.PackageNotFoundError:
        return "none"


def engine_key(build: BuildSettings, version: str, gpu: str, route: str = "engine") -> str:
    if route == "pytorch":
        return "hf-checkpoints"  # a Hugging Face checkpoint depends on no GPU, version or build option
    return "_".join((
        f"trtllm-{_slug(version)}", gpu, build.dtype, f"wo-{build.weight_only}",
        f"b{build.max_batch_size}", f"beam{build.max_beam_width}",
    ))


def build_command(spec: str, workdir: Path, build: BuildSettings, route: str = "engine") -> list[str]:
    return [
        sys.executable, "-m", "build_engines", "all",
        "--model", spec,
        "--workdir", str(workdir),
        "--route", route,
        "--dtype", build.dtype,
        "--weight-only", build.weight_only,
        "--max-batch-size", str(build.max_batch_size),
        "--max-beam-width", str(build.max_beam_width),
    ]


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_marker(workdir: Path, spec: str) -> Path:
    return workdir / f".built-{_slug(model_id(spec))}"


def ensure_engines(spec: str, workdir: Path, build: BuildSettings, route: str = "engine") -> None:
    """Builds one model's engines (PyTorch route: fetches its checkpoint) into `workdir/<model id>` unless done."""
    marker = built_marker(workdir, spec)
    if marker.is_file():
        log.info("engines of %s found in %s", spec, workdir)
        return
    with _exclusive(workdir.with_name(f"{workdir.name}.lock")):
        if marker.is_file():  # another pod built them while this one waited for the lock
            return
        command = build_command(spec, workdir, build, route)
        what = "building the TensorRT-LLM engines" if route == "engine" else "fetching the Hugging Face checkpoint"
        log.info("%s of %s (first start only: minutes): %s", what, spec, shlex.join(command))
        subprocess.run(command, check=True, cwd=APP_DIR)
        marker.write_text(shlex.join(command) + "\n", encoding="utf-8")


def prepare_engines(environ: MutableMapping[str, str]) -> None:
    """Builds or finds what WHISPER_MODELS needs; sets WHISPER_TRTLLM_ENGINE_DIR to it and WHISPER_TRTLLM_ROUTE."""
    settings = model_settings(environ)
    specs = model_specs(environ)
    if engine_of(settings) != "tensorrt_llm":
        for spec in specs:  # download or convert before Triton starts, as `make serve` does
            resolved = resolve_model(spec, settings.cache_path())
            log.info("model %s at %s", resolved.name, resolved.path)
        return
    route = resolve_route(settings.trtllm_route)
    environ["WHISPER_TRTLLM_ROUTE"] = route  # what the engine models and the rendered repository then serve
    log.info("TensorRT-LLM %s, %s route", trtllm_version(), route)
    if settings.trtllm_engine_dir:
        log.info("using %s (WHISPER_TRTLLM_ENGINE_DIR): nothing to build", settings.trtllm_engine_dir)
        return
    build = build_settings(environ)
    gpu = gpu_identity() if route == "engine" else ""
    workdir = settings.cache_path() / "trtllm" / engine_key(build, trtllm_version(), gpu, route)
    for spec in specs:
        ensure_engines(spec, workdir, build, route)
    environ["WHISPER_TRTLLM_ENGINE_DIR"] = str(workdir)


def read_serve_env(path: Path) -> dict[str, str]:
    """`serve.env` of a rendered repository: `NAME=value` lines, values shell-quoted."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = shlex.split(line)[0].partition("=")
            values[name] = value
    return values


def render_gpu_repository(environ: MutableMapping[str, str], target: Path) -> None:
    """This pod's GPU model repository for the engines; its serve.env fills what the environment leaves unset."""
    settings = model_settings(environ)
    build = build_settings(environ)
    options = RenderOptions(
        instances=build.instances,
        max_batch_size=settings.trtllm_max_batch_size or None,
        workers=build.workers,
        kv_cache_fraction=settings.trtllm_kv_cache_fraction,
        cross_kv_cache_fraction=settings.trtllm_cross_kv_cache_fraction,
        beam_size=settings.beam_size,
    )
    repository = render_repository(Path(settings.trtllm_engine_dir), target, options, models=model_specs(environ),
                                   route=resolve_route(settings.trtllm_route))
    for name, value in read_serve_env(repository / SERVE_ENV).items():
        environ.setdefault(name, value)


def server_command(binary: str, settings: TritonSettings, repository: Path, preload: list[str]) -> list[str]:
    """The tritonserver flags `make serve` uses (whisper_triton.launcher), with the container's own backends."""
    return launcher_command(settings, None, repository, preload, binary=binary)


def serve(environ: MutableMapping[str, str]) -> list[str]:
    """Writes the served model repository and returns tritonserver's command line."""
    work = Path(environ.get("TMPDIR") or "/tmp") / "whisper-triton"
    if engine_of(model_settings(environ)) == "tensorrt_llm":
        render_gpu_repository(environ, work / "gpu-repository")
    settings = load_settings(TritonSettings, "TRITON_", environ)
    if settings.model_load not in ("startup", "first_request"):
        raise SettingsError("TRITON_MODEL_LOAD must be 'startup' or 'first_request'.")
    with_preload(environ, allocator_library(settings.malloc))  # tritonserver and its model processes inherit it
    repository = work / f"repository-{settings.grpc_port}"
    models = model_settings(environ)
    engines = build_repository(Path(settings.model_repository), repository, model_specs(environ),
                               models.diarization_enabled, models.entry_instances)
    binary = shutil.which("tritonserver") or "/opt/tritonserver/bin/tritonserver"
    return server_command(binary, settings, repository, engines if settings.model_load == "startup" else [])


class _TritonFile(RotatingLogFile):
    """triton.log; a write that fails (disk full, permissions) costs one warning, not a traceback a line."""

    warned = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.warned:
            self.warned = True
            log.warning("cannot write %s (%s): Triton's lines reach the console only while this lasts",
                        self.baseFilename, sys.exc_info()[1])


class _LineQueue(QueueHandler):
    """Hands the lines to the file's writer thread; drops them when it falls behind (a stalled disk) rather than
    make the readers wait, which would block tritonserver on its full pipe."""

    dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            if not self.dropped:
                log.warning("%s is not written fast enough: lines are dropped from it (not from the console)",
                            TRITON_FILE)
            self.dropped += 1


def _open_triton_file(files: LogFileSettings) -> RotatingLogFile | None:
    try:
        return log_file(files, TRITON_FILE, _TritonFile)
    except OSError as exc:  # LOG_DIR cannot be created
        log.warning("cannot keep %s in %s (%s): Triton's lines reach the console only", TRITON_FILE, files.dir, exc)
        return None


def exit_status(returncode: int) -> int:
    """A shell's exit status for a child's return code: 128 + n for a death by signal n."""
    return 128 - returncode if returncode < 0 else returncode


def run_logged(command: list[str], files: LogFileSettings, out: BinaryIO | None = None,
               err: BinaryIO | None = None) -> int:
    """Runs tritonserver as a child: each line of its stdout and stderr reaches `out` and `err` (this process's)
    unchanged and LOG_DIR/triton.log parsed (level, request id); SIGTERM, SIGINT and SIGHUP are forwarded to
    it. Returns its exit status (128 + n for a death by signal n), as the runtime would have seen it."""
    target = _open_triton_file(files)
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUED_LINES)
    sink: logging.Handler = _LineQueue(records) if target is not None else logging.NullHandler()
    writer = QueueListener(records, *([target] if target is not None else []))
    lines = logging.getLogger(TRITON_LOGGER)
    lines.propagate = False  # the console gets the lines as they came, not once more through logging
    lines.setLevel(logging.DEBUG)
    lines.addHandler(sink)
    writer.start()
    previous: dict[signal.Signals, Any] = {}
    try:
        # Its own session: a terminal's Ctrl-C reaches it once, through this process.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

        def forward(signum: int, _frame: FrameType | None) -> None:
            process.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in FORWARDED}
        streams = ((process.stdout, out or sys.stdout.buffer), (process.stderr, err or sys.stderr.buffer))
        readers = [threading.Thread(target=log_triton_lines, args=(pipe, lines, echo), daemon=True)
                   for pipe, echo in streams]
        for reader in readers:
            reader.start()
        returncode = process.wait()
        for reader in readers:
            reader.join(timeout=5)  # a model process that outlives tritonserver may hold the pipes open
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        writer.stop()
        lines.removeHandler(sink)
        if target is not None:
            target.close()
    return exit_status(returncode)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Build the TensorRT-LLM engines if missing, then run tritonserver.")
    parser.add_argument("step", choices=("build", "serve"))
    step = parser.parse_args(argv).step
    environ = os.environ  # what is set here (the engine directory) reaches tritonserver and its model stubs
    try:
        prepare_engines(environ)
        if step == "build":
            return 0
        command = serve(environ)
        files = log_file_settings(dict(environ))
    except (SettingsError, ModelError, BuildError, TritonError) as exc:
        log.error("%s", exc)
        return 2
    except subprocess.CalledProcessError as exc:
        log.error("building the engines failed (exit code %d); see the log above", exc.returncode)
        return 1
    log.info("starting %s", shlex.join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    if files.dir:
        return run_logged(command, files)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
