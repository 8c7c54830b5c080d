"""`/v1/logs`: the log files of LOG_DIR over HTTP, for the operator (the admin key only).

    GET /v1/logs?since=&until=&level=&request_id=&task_id=&source=&limit=   matching lines, JSON lines
    GET /v1/logs/files                                                      the files (name, size, modified)
    GET /v1/logs/download?file=<name>                                       one file, as it is

Lines are read from the files as they stream out (frontend.log_search); never a whole file in memory.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.response import File, Stream
from litestar.status_codes import HTTP_404_NOT_FOUND

from frontend.errors import APIError, bad_request, error_responses
from frontend.guards import require_admin_key
from frontend.log_search import LEVELS, MAX_LIMIT, SOURCES, LogFile, LogQuery, find_file, list_files, parse_time, search
from whisper_triton.log_files import REQUEST_ID, LogFileSettings

NDJSON = "application/x-ndjson"
_ERRORS = error_responses({400: "Bad parameters", 401: "Missing or wrong API key", 403: "Not the admin key",
                           404: "Logs are not kept in files, or no such file"})


def log_folder(state: State) -> Path:
    """LOG_DIR, or 404 when logs are not kept in files."""
    files: LogFileSettings | None = state.get("log_files")
    if files is None or not files.dir:
        raise APIError(HTTP_404_NOT_FOUND, "Logs are not kept in files here: set LOG_DIR (on the frontend, and on "
                       "Triton's side a folder both share) to read them over HTTP.", code="logs_not_kept")
    return Path(files.dir).expanduser()


def log_query(since: str | None, until: str | None, level: str, request_id: str | None, task_id: str | None,
              source: str, limit: int) -> LogQuery:
    """The query of `GET /v1/logs`, or 400 naming the bad parameter."""
    times: dict[str, float | None] = {}
    for name, value in (("since", since), ("until", until)):
        try:
            times[name] = None if value is None else parse_time(value)
        except ValueError:
            raise bad_request(f"'{name}' must be an ISO 8601 time or unix seconds.", param=name) from None
    if times["since"] is not None and times["until"] is not None and times["until"] < times["since"]:
        raise bad_request("'until' is before 'since'.", param="until")
    if level.lower() not in LEVELS:
        raise bad_request(f"'level' must be one of {', '.join(LEVELS)}.", param="level")
    for name, value in (("request_id", request_id), ("task_id", task_id)):
        if value is not None and not REQUEST_ID.fullmatch(value):
            raise bad_request(f"'{name}' must be 1 to 128 letters, digits or ._:-", param=name)
    if source not in (*SOURCES, "all"):
        raise bad_request(f"'source' must be one of {', '.join(SOURCES)} or all.", param="source")
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"'limit' must be 1 to {MAX_LIMIT}.", param="limit")
    return LogQuery(since=times["since"], until=times["until"], level=LEVELS[level.lower()], request_id=request_id,
                    task_id=task_id, source=source, limit=limit)


class LogsController(Controller):
    path = "/v1/logs"
    guards = [require_admin_key]  # noqa: RUF012
    tags = ["operations"]  # noqa: RUF012

    @get("/", operation_id="listLogLines", responses=_ERRORS, media_type=NDJSON)
    async def list_log_lines(self, state: State, since: FromQuery[str | None] = None,
                             until: FromQuery[str | None] = None, level: FromQuery[str] = "debug",
                             request_id: FromQuery[str | None] = None, task_id: FromQuery[str | None] = None,
                             source: FromQuery[str] = "all", limit: FromQuery[int] = 1000) -> Stream:
        """The newest `limit` lines that match, oldest first, one JSON object a line: the frontend's and
        Triton's merged by time (each with `source` and `file`), from the current and the rotated files."""
        query = log_query(since, until, level, request_id, task_id, source, limit)
        return Stream(search(log_folder(state), query), media_type=NDJSON)

    @get("/files", operation_id="listLogFiles", responses=_ERRORS)
    async def list_log_files(self, state: State) -> list[LogFile]:
        """The log files: each source's oldest rotated copy first, the current file last."""
        return list_files(log_folder(state))

    @get("/download", operation_id="downloadLogFile", responses=_ERRORS, media_type="text/plain")
    async def download_log_file(self, state: State, file: FromQuery[str]) -> File:
        """One file of the listing, as it is (names only: no paths)."""
        folder = log_folder(state)
        if "/" in file or "\\" in file or file.startswith("."):
            raise bad_request("'file' is a name of GET /v1/logs/files, not a path.", param="file")
        path = find_file(folder, file)
        if path is None:
            raise APIError(HTTP_404_NOT_FOUND, f"No log file is named {file[:100]!r}: see GET /v1/logs/files.",
                           param="file", code="not_found")
        return File(path, filename=file, media_type="text/plain", content_disposition_type="attachment")
