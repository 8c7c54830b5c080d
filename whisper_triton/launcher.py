"""The embedded Triton runtime: `tritonserver` from the nvidia-pytriton wheel, on CPU.

Prepares a backend directory holding the Python backend and the stub built for the running
Python, puts this virtual environment first on PATH (the stub runs Python in isolated mode and
finds the venv only that way; the models import whisper_triton from its site-packages, where
`make install` installs this clone editable), starts the server on our model repository, waits
until the models are ready, streams the server log, stops it cleanly, and (as `Supervisor`)
restarts it when it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TypeVar

import msgspec

from whisper_triton.contract import ENTRY_MODEL, LIVE_MODEL
from whisper_triton.log_files import log_triton_lines
from whisper_triton.models_contract import MODELS_MODEL
from whisper_triton.repository import build_repository, model_specs
from whisper_triton.settings import load_settings, model_settings
from whisper_triton.stubs import StubWatch, children

log = logging.getLogger("whisper_triton.launcher")
REPO_ROOT = Path(__file__).resolve().parent.parent


class TritonError(Exception):
    pass


class TritonSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    metrics_port: int = 8002
    http_port: int = 0  # 0 = Triton's HTTP endpoint off (the frontend is the HTTP API)
    model_repository: str = str(REPO_ROOT / "model_repository")
    startup_timeout_s: float = 600.0
    log_verbose: int = 0
    shm_size_mb: int = 16
    model_load: str = "startup"  # startup: every WHISPER_MODELS engine; first_request: on demand
    malloc: str = "auto"  # auto: tcmalloc when installed; system: glibc's malloc; or a library's path

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


def triton_settings() -> TritonSettings:
    return load_settings(TritonSettings, "TRITON_")


# What each TRITON_* setting means (docs/configuration.md is generated from these: `python -m harness.docs`).
TRITON_SETTINGS_HELP = {
    "host": "address Triton's gRPC and metrics listen on",
    "grpc_port": "gRPC port",
    "metrics_port": "Prometheus metrics port (`/metrics`)",
    "http_port": "Triton's own HTTP/REST port; 0 = off",
    "model_repository": "the model repository",
    "startup_timeout_s": "how long to wait for the models to be ready",
    "log_verbose": "Triton's `--log-verbose` level",
    "shm_size_mb": "Python backend shared-memory start size and growth step (in /dev/shm; with less than 512 MB "
                   "free there the launcher warns at start: long files would fail)",
    "model_load": "`startup`: load every engine at start; `first_request`: on demand",
    "malloc": "the memory allocator of Triton and its model processes: `auto` preloads tcmalloc "
              "(libtcmalloc_minimal.so.4, which `make` installs) when it is found, else glibc's; `system`: glibc's "
              "malloc; or the path of an allocator library to preload. On CPU the engine decodes a 10-minute file "
              "10-17 % faster with tcmalloc (glibc maps and faults in its large buffers again for every batch)",
}

# Where distributions install tcmalloc (Debian/Ubuntu: libtcmalloc-minimal4; Fedora: gperftools-libs); the minimal
# library is the same allocator without the heap profiler.
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


Env = TypeVar("Env", bound=MutableMapping[str, str])


def library_dirs() -> list[Path]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    return [Path(folder) for folder in (f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/usr/lib",
                                        "/usr/local/lib")]


def allocator_library(choice: str, folders: list[Path] | None = None) -> Path | None:
    """The allocator to preload into tritonserver and its model processes for TRITON_MALLOC (None: glibc's).

    Why: CTranslate2 allocates buffers of tens to hundreds of MB per batch (a batch of 8 windows at beam 5 keeps
    1.4 GB), above glibc's largest mmap threshold (32 MB), so glibc maps them afresh and the kernel faults in and
    zeroes every page again for each batch: 3 million page faults for a 10-minute file on CPU. tcmalloc keeps
    freed spans for the next batch (15 thousand faults), and the engine used 36 CPU-s instead of 42 at beam 5."""
    if choice == "system":
        return None
    if choice == "auto":
        for folder in folders if folders is not None else library_dirs():
            for name in TCMALLOC_NAMES:
                if (folder / name).is_file():
                    return folder / name
        log.warning("tcmalloc is not installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4; `make` installs "
                    "it): Triton runs with glibc's malloc, and CPU decoding is 10-17 %% slower")
        return None
    path = Path(choice)
    if not path.is_absolute() or not path.is_file():
        raise TritonError(f"TRITON_MALLOC={choice!r}: expected auto, system or the absolute path of an allocator "
                          "library (e.g. /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4)")
    return path


def with_preload(env: Env, library: Path | None) -> Env:
    """`env` with `library` first in LD_PRELOAD (unchanged for None)."""
    if library is not None:
        env["LD_PRELOAD"] = ":".join(p for p in (str(library), env.get("LD_PRELOAD", "")) if p)
    return env


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonError("nvidia-pytriton is not installed: run `make install`.")
    return Path(spec.origin).parent


def installed_package_dir(python: str = sys.executable) -> Path | None:
    """Where `python` in isolated mode, as the backend stub runs it, imports whisper_triton from (None: nowhere)."""
    probe = subprocess.run([python, "-I", "-c", "import whisper_triton; print(whisper_triton.__file__)"],
                           capture_output=True, text=True, cwd="/", timeout=60)
    return Path(probe.stdout.strip()).resolve().parent if probe.returncode == 0 and probe.stdout.strip() else None


SHARED_MEMORY = Path("/dev/shm")
# What the Python models' shared memory needs for long files (a 1-hour WAV alone is 115 MB) with room for
# requests in flight; Docker's default /dev/shm of 64 MB fails such requests.
SHARED_MEMORY_NEEDED_MB = 512


def shared_memory_warning(folder: Path = SHARED_MEMORY, needed_mb: int = SHARED_MEMORY_NEEDED_MB) -> str | None:
    """Why the Python backend may fail requests here: too little free space in /dev/shm (None: enough, or
    no /dev/shm to read)."""
    try:
        free_mb = shutil.disk_usage(folder).free // (1024 * 1024)
    except OSError:
        return None
    if free_mb >= needed_mb:
        return None
    return (f"{folder} has {free_mb} MB free: Triton's Python models keep requests there, and long files will fail"
            f" (\"Failed to increase the shared memory pool size\"); give it at least {needed_mb} MB (Docker:"
            " --shm-size=2g, compose: shm_size)")


def shared_memory_prefix(grpc_port: int) -> str:
    """The name prefix of the Python backend's shared-memory regions of the Triton serving on `grpc_port` (its
    default, triton_python_backend_shm_region_, is every Triton's): regions left by one that died are then ours
    to find."""
    return f"whisper_triton_{grpc_port}_"


def remove_stale_shared_memory(prefix: str, folder: Path = SHARED_MEMORY, proc: Path = Path("/proc")) -> list[Path]:
    """Removes the shared-memory regions named `prefix`... that no process maps (run before a Triton with that
    prefix starts, and once it stopped); returns them.

    Triton unlinks a model's region when it unloads the model, but a Triton that was killed or crashed (which
    `Supervisor` then restarts) leaves its regions behind: /dev/shm is memory, 16-64 MB a model process, kept
    until the machine restarts (14 GB had piled up here over two days of tests and benchmarks). A region some
    process still maps is kept (another server on this port, not one of ours)."""
    candidates = []
    for path in folder.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            candidates.append((path, path.stat().st_size))
    if not candidates:
        return []
    mapped = set()
    for maps in proc.glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        for line in text.splitlines():
            if prefix in line:
                mapped.add(line.rsplit("/", 1)[-1].removesuffix(" (deleted)"))
    removed, freed = [], 0
    for path, size in candidates:
        if path.name in mapped:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
            freed += size
    if removed:
        log.info("removed %d shared-memory regions left by a Triton that died (%.0f MB)", len(removed), freed / 1e6)
    return removed


def check_installed(python: str = sys.executable) -> None:
    """The Triton models import whisper_triton from the venv, not from the working directory: it must be
    this one, or the server would run other code than the launcher's (another clone sharing the venv)."""
    here = Path(__file__).resolve().parent
    found = installed_package_dir(python)
    if found != here:
        where = f"from {found}" if found is not None else "nowhere"
        raise TritonError(f"The Triton models would import whisper_triton {where}, not {here}: run `make install` "
                          "(it installs this clone into the venv).")


def prepare_backend_dir(target: Path) -> Path:
    """A `--backend-directory` whose python/ holds the backend and our Python's stub."""
    triton = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"nvidia-pytriton has no Python backend stub for Python {version}.")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (
        triton / "backends" / "python" / "libtriton_python.so",
        triton / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        destination = python_dir / source.name
        if not destination.exists() or destination.stat().st_size != source.stat().st_size:
            shutil.copy2(source, destination)
    (python_dir / stub.name).chmod(0o755)
    return target


def server_command(
    settings: TritonSettings,
    backend_dir: Path | None,
    repository: Path,
    preload: list[str],
    binary: str | None = None,
) -> list[str]:
    """tritonserver's command line: pytriton's binary and our backend folder here; in NVIDIA's container
    (docker/triton_entrypoint.py) its own binary and backends (`backend_dir=None`)."""
    binary = binary or str(_pytriton_dir() / "tritonserver" / "bin" / "tritonserver")
    shm = settings.shm_size_mb * 1024 * 1024
    command = [
        binary,
        f"--model-repository={repository.resolve()}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in [ENTRY_MODEL, LIVE_MODEL, MODELS_MODEL, *preload]),
        *([f"--backend-directory={backend_dir}"] if backend_dir is not None else []),
        "--disable-auto-complete-config",
        "--exit-on-error=true",
        "--strict-readiness=true",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.grpc_port}",
        "--allow-metrics=true",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.metrics_port}",
        f"--backend-config=python,shm-default-byte-size={shm}",
        f"--backend-config=python,shm-growth-byte-size={shm}",
        f"--backend-config=python,shm-region-prefix-name={shared_memory_prefix(settings.grpc_port)}",
        f"--log-verbose={settings.log_verbose}",
    ]
    if settings.http_port:  # the Kubernetes probes and the image's HEALTHCHECK use /v2/health/*
        command += ["--allow-http=true", f"--http-address={settings.host}", f"--http-port={settings.http_port}"]
    else:
        command += ["--allow-http=false"]
    return command


def server_environment(base: dict[str, str] | None = None, allocator: Path | None = None) -> dict[str, str]:
    env = with_preload(dict(os.environ if base is None else base), allocator)
    libs = [str(_pytriton_dir().parent / "nvidia_pytriton.libs")]
    # The stub links libpython3.X.so.1.0: take the one of the Python this venv was made from, so
    # that its compiled stdlib modules (_ssl, ...) match (a system libpython of another patch
    # release lacks symbols they need). Debian's own Python finds its library anyway.
    python_lib = Path(sysconfig.get_config_var("LIBDIR") or "")
    if (python_lib / f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0").exists():
        libs.append(str(python_lib))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (*libs, env.get("LD_LIBRARY_PATH", "")) if p)
    # The stub embeds Python in isolated mode: it finds this venv only through PATH.
    env["PATH"] = os.pathsep.join((str(Path(sys.prefix) / "bin"), env.get("PATH", "")))
    env.setdefault("LC_ALL", "C.UTF-8")
    # NumPy's BLAS would start a thread per core in every model process, for small products (VAD, log-mel)
    # that one thread does as fast; the spinning extra threads only take CPU from the engine.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def remove_stale_repositories(work_dir: Path, min_age_s: float = 600.0) -> list[Path]:
    """Generated repositories of servers that are gone (nothing listens on their port): a launcher that
    was killed could not remove its own. Young ones are kept: their server may still be starting."""
    removed = []
    for folder in work_dir.glob("repository-*"):
        port = folder.name.removeprefix("repository-")
        if not port.isdigit() or time.time() - folder.stat().st_mtime < min_age_s or _listening(int(port)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the launching thread dies, so Triton is never orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TritonServer:
    """One tritonserver process; `start()` returns once the Whisper models are ready."""

    def __init__(self, settings: TritonSettings, work_dir: Path, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.repository: Path | None = None
        self.preload: list[str] = []
        self._log_thread: threading.Thread | None = None
        self._stubs = StubWatch()

    def start(self) -> None:
        if self.settings.model_load not in ("startup", "first_request"):
            raise TritonError("TRITON_MODEL_LOAD must be 'startup' or 'first_request'.")
        allocator = allocator_library(self.settings.malloc)  # a wrong TRITON_MALLOC fails before anything is built
        check_installed()
        if warning := shared_memory_warning():
            log.warning(warning)
        backend_dir = prepare_backend_dir(self.work_dir / "backends")
        # One generated repository per server (keyed by its port): Triton reads it while it runs.
        remove_stale_repositories(self.work_dir)
        remove_stale_shared_memory(shared_memory_prefix(self.settings.grpc_port), SHARED_MEMORY)
        repository = self.work_dir / f"repository-{self.settings.grpc_port}"
        self.repository = repository
        env = os.environ if self._env is None else self._env
        models = model_settings(env)
        engines = build_repository(Path(self.settings.model_repository), repository, model_specs(env),
                                   models.diarization_enabled, models.entry_instances)
        self.preload = engines if self.settings.model_load == "startup" else []
        command = server_command(self.settings, backend_dir, repository, self.preload)
        log.info("starting Triton: gRPC %s, metrics %s:%d, allocator %s", self.settings.grpc_url, self.settings.host,
                 self.settings.metrics_port, allocator.name if allocator else "glibc")
        self.process = subprocess.Popen(
            command,
            env=server_environment(self._env, allocator),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the stubs stop with it
            preexec_fn=_die_with_parent,
        )
        self._log_thread = threading.Thread(target=self._stream_log, daemon=True)
        self._log_thread.start()
        try:
            self.wait_ready(self.settings.startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _stream_log(self) -> None:
        """Tritonserver's lines through logging (the console, and `triton.log` in LOG_DIR), at their level and
        with the request id the models tag their lines with."""
        assert self.process is not None and self.process.stdout is not None
        log_triton_lines(self.process.stdout, logging.getLogger("tritonserver"))

    def wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        client = grpcclient.InferenceServerClient(self.settings.grpc_url)
        try:
            while time.monotonic() < deadline:
                if not self.is_running():
                    raise TritonError(f"tritonserver exited with code {self.returncode} during start-up; see its log.")
                try:
                    if client.is_server_ready() and all(
                        client.is_model_ready(name) for name in (ENTRY_MODEL, LIVE_MODEL, MODELS_MODEL, *self.preload)
                    ):
                        log.info("Triton is ready")
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        raise TritonError(f"Triton was not ready within {timeout:.0f} s.")

    def crashed_models(self) -> list[str]:
        """Models whose Python-backend process died while Triton runs (see `whisper_triton.stubs`)."""
        if not self.is_running():
            return []
        assert self.process is not None
        return self._stubs.crashed(children(self.process.pid))

    def reload(self, model: str, timeout: float = 120.0) -> None:
        """Loads a model again (new processes); requests that need it wait or fail meanwhile."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.settings.grpc_url)
        try:
            client.load_model(model, client_timeout=timeout)
        finally:
            client.close()

    def is_decoupled(self, model: str) -> bool:
        """Whether the model answers in streams (`decoupled: true` in its generated config)."""
        if self.repository is None:
            return True
        try:
            config = (self.repository / model / "config.pbtxt").read_text()
        except OSError:
            return True  # unknown: a restart is the safe recovery
        return re.search(r"decoupled\s*:\s*true", config) is not None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 30.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Triton finishes in-flight requests, then exits
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("Triton did not stop within %.0f s; killing it", timeout)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # leftover stubs of the group
        except ProcessLookupError:
            pass
        process.wait()
        # A Triton that was killed (or crashed, or outlived the timeout) did not unlink its regions.
        remove_stale_shared_memory(shared_memory_prefix(self.settings.grpc_port), SHARED_MEMORY)
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
        self.process = None
        self._stubs = StubWatch()
        if self.repository is not None:
            shutil.rmtree(self.repository, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Keeps one TritonServer running: restarts it (with backoff) whenever it exits, and brings back a
    model whose Python process died (Triton itself does not): the model is loaded again, or, for a
    decoupled model (the entry model, the engine), whose in-flight streams would otherwise never end,
    Triton is restarted."""

    def __init__(self, server: TritonServer, max_backoff_s: float = 30.0) -> None:
        self.server = server
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self.model_reloads = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.server.start()
        self.ready.set()
        self._thread = threading.Thread(target=self._watch, name="triton-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            if self.server.is_running():
                self._recover(self.server.crashed_models())
                self._stopping.wait(0.5)
                continue
            self.ready.clear()
            log.error("tritonserver exited with code %s; restarting in %.0f s", self.server.returncode, backoff)
            self.server.stop()
            if self._stopping.wait(backoff):
                return
            try:
                self.server.start()
                self.restarts += 1
                self.ready.set()
                backoff = 1.0
            except Exception as exc:
                log.error("restarting Triton failed: %s", exc)
                backoff = min(backoff * 2, self.max_backoff_s)

    def _recover(self, crashed: list[str]) -> None:
        """A dead model process: a decoupled model's streams (the entry model's, and the engine's, which
        the entry model's BLS calls read) never end, and only a restart of Triton ends them; any other
        model is loaded again."""
        if not crashed:
            return
        streaming = [model for model in crashed if self.server.is_decoupled(model)]
        if not streaming:
            try:
                for model in crashed:
                    log.error("the process of model %s died; loading the model again", model)
                    self.server.reload(model)
                    self.model_reloads += 1
                return
            except Exception as exc:
                log.error("loading the model again failed (%s): restarting Triton", exc)
        else:
            log.error("the process of model %s died; its streams would never end: restarting Triton",
                      ", ".join(streaming))
        self.server.stop(timeout=2.0)  # the watch loop starts it again

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.server.stop()
