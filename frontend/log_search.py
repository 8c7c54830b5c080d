"""Reading the log files of LOG_DIR for `GET /v1/logs`: which files there are, and the lines that match a query.

Files are read line by line (never whole), oldest first; a file last changed before `since` is skipped
unopened. The lines of both sources (the frontend's and Triton's) are merged by time. Lines in either format
(whisper_triton.log_files) are read: JSON objects, or text lines whose `key=value` tail gives the ids.
Only files of the listing can be named (`find_file`): no path leads outside LOG_DIR.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from whisper_triton.log_files import FRONTEND_FILE, TRITON_FILE

SOURCES = {"frontend": FRONTEND_FILE, "triton": TRITON_FILE}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
MAX_LIMIT = 10_000
_SOURCE_OF = {file: source for source, file in SOURCES.items()}
# A source's current file, or one of its rotated copies (`frontend.log.3`).
_NAME = re.compile(rf"^({'|'.join(map(re.escape, _SOURCE_OF))})(?:\.(\d{{1,4}}))?$")
_TEXT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?) ([A-Z]+) (\S+): (.*)$")
_TEXT_FIELD = re.compile(r"(?:^|\s)(request_id|task_id|key)=(\S+)")
_decoder = msgspec.json.Decoder()


class LogFile(msgspec.Struct, frozen=True):
    name: str
    source: str  # frontend | triton
    size: int
    modified: float  # unix seconds of its last line


class LogQuery(msgspec.Struct, frozen=True):
    since: float | None = None
    until: float | None = None
    level: int = logging.DEBUG  # the lowest level shown
    request_id: str | None = None
    task_id: str | None = None
    source: str = "all"  # frontend | triton | all
    limit: int = 1000  # the newest lines that match, at most


def parse_time(value: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC unless it says otherwise); ValueError for anything else."""
    try:
        return float(value)
    except ValueError:
        pass
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def list_files(folder: Path) -> list[LogFile]:
    """The log files of `folder`, each source's oldest rotated copy first, the current file last."""
    found = []
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match is None or path.is_symlink() or not path.is_file():
            continue
        stat = path.stat()
        source = _SOURCE_OF[match.group(1)]
        found.append((source, -int(match.group(2) or 0), LogFile(path.name, source, stat.st_size, stat.st_mtime)))
    return [item for _, _, item in sorted(found, key=lambda entry: entry[:2])]


def find_file(folder: Path, name: str) -> Path | None:
    """The file of the listing named `name` exactly (None for any other name: a path, a link, `..`)."""
    if any(item.name == name for item in list_files(folder)):
        return folder / name
    return None


def search(folder: Path, query: LogQuery) -> Iterator[bytes]:
    """The matching lines as JSON lines (with `source` and `file`), in time order: the newest `query.limit`."""
    sources = SOURCES if query.source == "all" else {query.source: SOURCES[query.source]}
    streams = []
    for source in sources:
        files = [item for item in list_files(folder) if item.source == source
                 and (query.since is None or item.modified >= query.since)]
        streams.append(_entries(folder, files))
    newest: deque[dict[str, Any]] = deque(maxlen=query.limit)  # bounded: never more than `limit` lines held
    for _, entry in heapq.merge(*streams, key=lambda pair: pair[0]):
        if _matches(entry, query):
            newest.append(entry)
    for entry in newest:
        yield msgspec.json.encode(entry) + b"\n"


def _entries(folder: Path, files: list[LogFile]) -> Iterator[tuple[float, dict[str, Any]]]:
    for item in files:
        try:
            handle = (folder / item.name).open("rb")
        except OSError:  # rotated away meanwhile
            continue
        with handle:
            for entry in _file_entries(handle):
                entry.setdefault("source", item.source)
                entry.setdefault("file", item.name)
                yield entry["_t"], entry


def _file_entries(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """The entries of one file: a line that is no entry (a traceback of a text log) continues the previous one."""
    pending: dict[str, Any] | None = None
    for raw in lines:
        entry = parse_line(raw)
        if entry is not None:
            if pending is not None:
                yield pending
            pending = entry
        elif pending is not None and raw.strip():
            pending["message"] = f"{pending['message']}\n{raw.decode('utf-8', 'replace').rstrip()}"
    if pending is not None:
        yield pending


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """A JSON or text log line as a dict with `time`, `level`, `logger`, `message` (None: no log line)."""
    entry: dict[str, Any]
    if raw.startswith(b"{"):
        try:
            entry = _decoder.decode(raw)
        except msgspec.DecodeError:
            return None
        if not isinstance(entry, dict) or "time" not in entry:
            return None
    else:
        match = _TEXT.match(raw.decode("utf-8", "replace").rstrip("\n"))
        if match is None:
            return None
        when, level, logger, message = match.groups()
        entry = {"time": when, "level": level.lower(), "logger": logger, "message": message}
        entry |= {name: value for name, value in _TEXT_FIELD.findall(message)}
    try:
        entry["_t"] = parse_time(str(entry["time"]))
    except ValueError:
        return None
    return entry


def _matches(entry: dict[str, Any], query: LogQuery) -> bool:
    moment = entry.pop("_t")
    return ((query.since is None or moment >= query.since) and (query.until is None or moment <= query.until)
            and LEVELS.get(str(entry.get("level")), logging.INFO) >= query.level
            and (query.request_id is None or entry.get("request_id") == query.request_id)
            and (query.task_id is None or entry.get("task_id") == query.task_id))
