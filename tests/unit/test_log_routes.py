"""GET /v1/logs, /v1/logs/files and /v1/logs/download on the real app (no Triton needed): the admin key only,
bad parameters and file names in OpenAI's error shape, and x-request-id on every response."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from frontend.app import create_app
from frontend.settings import FrontendSettings
from whisper_triton.log_files import JsonFormatter, LogFileSettings

ADMIN = {"x-admin-api-key": "admin-secret"}
USER = {"authorization": "Bearer user-secret"}


def entry(message: str, created: float, **extra: str) -> str:
    record = logging.LogRecord("frontend.test", logging.INFO, "", 0, message, None, None)
    record.created = created
    record.__dict__.update(extra)
    return JsonFormatter().format(record) + "\n"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "frontend.log.1").write_text(entry("rotated", 100, request_id="r1"))
    (folder / "frontend.log").write_text(entry("current", 200, request_id="r2"))
    (folder / "triton.log").write_text(entry("in the model", 150, request_id="r1"))
    return folder


def client_for(tmp_path: Path, log_dir: Path | None) -> TestClient:
    settings = FrontendSettings(triton_url="127.0.0.1:9", models=["tiny.en"], data_dir=str(tmp_path / "data"),
                                api_keys=["user:user-secret"], admin_api_key="admin-secret")
    files = LogFileSettings(dir=str(log_dir)) if log_dir is not None else None
    return TestClient(create_app(settings, files))


@pytest.fixture
def client(tmp_path: Path, log_dir: Path) -> Iterator[TestClient]:
    with client_for(tmp_path, log_dir) as test_client:
        yield test_client


def error_of(response: httpx.Response) -> dict[str, object]:
    error: dict[str, object] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_the_admin_reads_lines_of_both_sources_as_json_lines(client: TestClient) -> None:
    response = client.get("/v1/logs", params={"request_id": "r1"}, headers=ADMIN)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [(line["message"], line["source"]) for line in lines] == [("rotated", "frontend"),
                                                                     ("in the model", "triton")]


@pytest.mark.parametrize("path", ["/v1/logs", "/v1/logs/files", "/v1/logs/download?file=frontend.log"])
def test_no_key_is_401_and_a_user_key_is_403(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401
    assert error_of(client.get(path))["code"] == "invalid_api_key"
    refused = client.get(path, headers=USER)
    assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden"
    assert client.get(path, headers={"x-admin-api-key": "wrong"}).status_code == 401
    assert client.get(path, headers={**ADMIN, "x-act-as-key": "user"}).status_code == 403


@pytest.mark.parametrize("params, param", [
    ({"since": "yesterday"}, "since"), ({"until": "12:00"}, "until"), ({"since": "200", "until": "100"}, "until"),
    ({"level": "loud"}, "level"), ({"limit": "0"}, "limit"), ({"limit": "10001"}, "limit"),
    ({"source": "disk"}, "source"), ({"request_id": "a b"}, "request_id"), ({"task_id": "x" * 200}, "task_id"),
])
def test_bad_parameters_are_400_naming_them(client: TestClient, params: dict[str, str], param: str) -> None:
    response = client.get("/v1/logs", params=params, headers=ADMIN)
    assert response.status_code == 400 and error_of(response)["param"] == param


def test_files_are_listed_and_a_rotated_one_downloads(client: TestClient) -> None:
    files = client.get("/v1/logs/files", headers=ADMIN).json()
    assert [f["name"] for f in files] == ["frontend.log.1", "frontend.log", "triton.log"]
    assert {"name", "source", "size", "modified"} <= set(files[0])
    response = client.get("/v1/logs/download", params={"file": "frontend.log.1"}, headers=ADMIN)
    assert response.status_code == 200 and json.loads(response.text)["message"] == "rotated"
    assert "attachment" in response.headers["content-disposition"]


@pytest.mark.parametrize("name, status", [("../data/tasks.db", 400), ("/etc/passwd", 400), ("..", 400),
                                          (".hidden", 400), ("frontend.log.9", 404), ("secret.log", 404),
                                          ("frontend.log%00", 404)])
def test_names_outside_the_listing_are_refused(client: TestClient, log_dir: Path, name: str, status: int) -> None:
    (log_dir / "secret.log").symlink_to(log_dir.parent / "data")
    response = client.get("/v1/logs/download", params={"file": name}, headers=ADMIN)
    assert response.status_code == status and error_of(response)["param"] == "file"


def test_without_log_dir_the_answer_says_logs_are_not_kept_in_files(tmp_path: Path) -> None:
    with client_for(tmp_path, None) as client:
        response = client.get("/v1/logs", headers=ADMIN)
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "logs_not_kept" and "LOG_DIR" in str(error["message"])


def test_a_missing_triton_file_is_no_error(client: TestClient, log_dir: Path) -> None:
    (log_dir / "triton.log").unlink()
    response = client.get("/v1/logs", params={"source": "triton"}, headers=ADMIN)
    assert response.status_code == 200 and response.text == ""


def test_every_response_carries_the_request_id(client: TestClient) -> None:
    assert client.get("/v1/logs", headers={"x-request-id": "mine-1"}).headers["x-request-id"] == "mine-1"
    generated = client.get("/no/such/route", headers={"x-request-id": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32
    assert client.get("/health").headers["x-request-id"] != client.get("/health").headers["x-request-id"]
    assert len(client.get("/health", headers={"x-request-id": "x" * 129}).headers["x-request-id"]) == 32
