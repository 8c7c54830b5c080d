"""Security of the HTTP API: authentication on every route that needs it, /docs and CORS settings,
task ids that cannot traverse paths, size limits on every field, SSRF, and secrets kept out of logs.

A served stack of its own runs with every secret configured (API keys, admin key, webhook secret,
Hugging Face token, and a PostgreSQL URL with a password when a server can be started here) and
debug logging; the last test reads its whole log for the secrets. Settings that differ run in a
second, in-process frontend on the same Triton (`run_frontend`).
"""

from __future__ import annotations

import inspect
import re
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from frontend.app import create_app
from frontend.guards import identify
from frontend.keys import KeyRing
from frontend.settings import FrontendSettings
from harness.assets import jfk_wav
from harness.stack import Served, run_frontend, start_served
from tests.e2e.test_http_errors import assert_openai_error

API_KEY = "sk-test-3b1f9a7c0d5e42f8a6c1"
OTHER_KEY = "sk-test-other-77e0c5d94b2a"
ADMIN_KEY = "adm-test-0f9e8d7c6b5a4f3e"
WRONG_KEY = "sk-wrong-51c2d3e4f5a6b7c8"
WEBHOOK_SECRET = "whsec-test-a1b2c3d4e5f60718"
HF_TOKEN = "hf_testTOKENnotREAL1234567890"
DB_PASSWORD = "pgpass-test-9a8b7c6d5e"
SECRETS = (API_KEY, OTHER_KEY, ADMIN_KEY, WRONG_KEY, WEBHOOK_SECRET, HF_TOKEN, DB_PASSWORD)
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PUBLIC_IP = "93.184.216.34"  # a literal public address: passes the URL policy without DNS

# Routes anyone may call even when keys are set: probes, the web page and its files, metrics, docs.
OPEN = {
    ("GET", "/health"), ("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/"),
    ("GET", "/static/{file_path:path}"), ("HEAD", "/static/{file_path:path}"), ("GET", "/metrics"),
    ("GET", "/docs"), ("GET", "/docs/swagger"), ("GET", "/docs/openapi.json"), ("GET", "/docs/{path:str}"),
    ("GET", "/docs/oauth2-redirect.html"),
}  # fmt: skip


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[Served]:
    env = {"FRONTEND_API_KEYS": f"{API_KEY},{OTHER_KEY}", "ADMIN_API_KEY": ADMIN_KEY,
           "WEBHOOK_SECRET": WEBHOOK_SECRET, "WHISPER_HF_TOKEN": HF_TOKEN, "HF_TOKEN": HF_TOKEN,
           "FRONTEND_LOG_LEVEL": "debug", "FRONTEND_WEBHOOK_ATTEMPTS": "1"}
    if postgres_url is not None:  # trust authentication: the password is accepted and ignored
        env["DB_URL"] = postgres_url.replace("postgresql://test@", f"postgresql://test:{DB_PASSWORD}@")
    instance = start_served(tmp_path_factory.mktemp("serve-secure"), "tiny.en", **env)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def http(secure: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secure.base_url, timeout=120) as client:
        yield client


def raw_get(client: httpx.Client, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
    """A request whose path goes out exactly as written (httpx would normalise `..`)."""
    request = client.build_request(method, "/", **kwargs)
    request.url = request.url.copy_with(raw_path=path.encode())
    return client.send(request)


# --------------------------------------------------------------------------------------------------
# Authentication


def routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, from the app itself."""
    app = create_app(FrontendSettings(models=["tiny.en"]))
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(getattr(handler, "http_methods", ())):
                if method != "OPTIONS":
                    found.append((method, route.path))
    return sorted(set(found))


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "nothing-here", path)


@pytest.mark.parametrize(("method", "path"), routes(), ids=[f"{m} {p}" for m, p in routes()])
def test_every_route_needs_a_key_unless_it_is_meant_to_be_open(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, concrete(path))
    if (method, path) in OPEN:
        assert response.status_code != 401, response.text
        return
    error = assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"
    # The key opens it (whatever the route then says about the empty request).
    assert http.request(method, concrete(path), headers=AUTH).status_code != 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"Authorization": API_KEY},  # no scheme
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
        {"x-admin-api-key": API_KEY},  # an API key is not the admin key
        {"x-admin-api-key": WRONG_KEY, "Authorization": f"Bearer {API_KEY}"},
    ],
    ids=["wrong", "no-scheme", "basic", "longer", "prefix", "api-key-as-admin", "wrong-admin-beside-right"],
)
def test_wrong_keys_are_refused(http: httpx.Client, headers: dict[str, str]) -> None:
    assert_openai_error(http.get("/v1/models", headers=headers), 401)


@pytest.mark.parametrize(
    "headers",
    [AUTH, {"Authorization": f"bearer {OTHER_KEY}"}, {"Authorization": f"Bearer {ADMIN_KEY}"},
     {"x-admin-api-key": ADMIN_KEY}],
    ids=["api-key", "other-key-lowercase-scheme", "admin-as-bearer", "admin-header"],
)
def test_right_keys_are_accepted(http: httpx.Client, headers: dict[str, str]) -> None:
    assert http.get("/v1/models", headers=headers).status_code == 200


def test_keys_are_compared_in_constant_time() -> None:
    source = inspect.getsource(KeyRing.identify) + inspect.getsource(KeyRing.admin_matches)
    assert source.count("hmac.compare_digest") == 2
    assert "break" not in source and "return" not in source.split("for key in self.keys", 1)[1].split("\n")[1]
    guard = inspect.getsource(identify)
    assert not re.search(r"(token|admin|bearer|candidate)\w*\s*(==|!=|\bin\b)\s*(settings\.|keys)", guard)


# --------------------------------------------------------------------------------------------------
# /docs and CORS


def test_docs_are_open_by_default(http: httpx.Client) -> None:
    assert http.get("/docs").status_code == 200
    assert http.get("/docs/openapi.json").json()["paths"]


def test_docs_can_be_turned_off_or_put_behind_the_keys(secure: Served) -> None:
    with run_frontend(secure, docs="off") as base_url:
        for path in ("/docs", "/docs/openapi.json", "/docs/swagger"):
            assert_openai_error(httpx.get(base_url + path), 404)
        assert httpx.get(base_url + "/health").status_code == 200
    with run_frontend(secure, docs="auth", api_keys=[API_KEY]) as base_url:
        assert_openai_error(httpx.get(base_url + "/docs/openapi.json"), 401)
        assert httpx.get(base_url + "/docs/openapi.json", headers=AUTH).status_code == 200
        assert httpx.get(base_url + "/docs", headers=AUTH).status_code == 200


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def preflight(base_url: str, origin: str) -> httpx.Response:
    return httpx.options(base_url + "/v1/audio/transcriptions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_no_cors_headers_by_default(http: httpx.Client, secure: Served) -> None:
    response = http.get("/v1/models", headers={**AUTH, "Origin": "https://app.example"})
    assert response.status_code == 200 and not cors_headers(response)
    assert not cors_headers(preflight(secure.base_url, "https://app.example"))


def test_cors_only_for_the_allowed_origins(secure: Served) -> None:
    with run_frontend(secure, api_keys=[API_KEY], cors_origins=["https://app.example"]) as base_url:
        allowed = httpx.get(base_url + "/v1/models", headers={**AUTH, "Origin": "https://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed.headers
        refused = httpx.get(base_url + "/v1/models", headers={**AUTH, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers
        ok = preflight(base_url, "https://app.example")
        assert ok.status_code in (200, 204) and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-origin" not in preflight(base_url, "https://evil.example").headers


def test_bad_settings_are_refused() -> None:
    from frontend.settings import frontend_settings
    from whisper_triton.settings import SettingsError

    for env in ({"FRONTEND_DOCS": "public"}, {"FRONTEND_CORS_ORIGINS": "app.example"},
                {"FRONTEND_CORS_ORIGINS": "https://app.example/path"}):
        with pytest.raises(SettingsError, match=next(iter(env))):
            frontend_settings({**env, "FRONTEND_MODELS": "tiny.en"})
    settings = frontend_settings({"FRONTEND_CORS_ORIGINS": "https://a.example,http://localhost:3000",
                                  "FRONTEND_MODELS": "tiny.en"})
    assert settings.cors_origins == ["https://a.example", "http://localhost:3000"] and settings.docs == "open"


# --------------------------------------------------------------------------------------------------
# Task ids and other path parameters

HOSTILE_IDS = ["..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
               "%00", "a%00b", "..%00", "%C0%AE%C0%AE", "%5c..%5c..%5cwindows", "x" * 5000, "%0d%0aSet-Cookie:%20a=b",
               "'%20OR%20'1'='1", "%24(id)", "%ff%fe"]
TEMPLATES = [("GET", "/task/{}"), ("GET", "/task/{}/result"), ("DELETE", "/task/{}/delete"), ("GET", "/status/{}"),
             ("DELETE", "/cancel/{}"), ("GET", "/v1/speakers/{}"), ("DELETE", "/v1/speakers/{}"),
             ("GET", "/v1/models/{}"), ("GET", "/static/{}")]


@pytest.mark.parametrize("task_id", HOSTILE_IDS, ids=lambda value: value[:24])
def test_hostile_ids_never_reach_a_file_or_fail(http: httpx.Client, task_id: str) -> None:
    for method, template in TEMPLATES:
        response = raw_get(http, template.format(task_id), method, headers=AUTH)
        assert response.status_code < 500, (method, template, response.text)
        assert "root:" not in response.text and "set-cookie" not in {k.lower() for k in response.headers}


def test_managed_task_ids_are_checked(http: httpx.Client) -> None:
    for task_id in ("../../etc/passwd", "a/b", "x" * 65, "a\x00b", ""):
        body = {"url": f"http://{PUBLIC_IP}/a.wav", "is_async": True, "managed_task_id": task_id}
        response = http.post("/", json=body, headers=AUTH)
        if task_id:
            assert_openai_error(response, 400, "managed_task_id")
        else:  # empty: the server picks the id
            assert response.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", response.json()["task_id"])


# --------------------------------------------------------------------------------------------------
# Size limits

BIG = "x" * (64 * 1024 + 1)


@pytest.mark.parametrize(
    ("path", "field"),
    [("/v1/audio/transcriptions", "prompt"), ("/v1/audio/transcriptions", "language"),
     ("/v1/audio/transcriptions", "anything"), ("/v1/audio/translations", "prompt"),
     ("/speech-to-text", "initial_prompt"), ("/speech-to-text", "webhook_url"), ("/service/transcribe", "language"),
     ("/service/diarize", "num_speakers"), ("/service/align", "transcript"), ("/speech-to-text-url", "url"),
     ("/v1/speakers", "name"), ("/v1/speakers/identify", "threshold"),
     ("/v1/audio/transcriptions", "known_speaker_references[]")],
)
def test_every_form_field_has_a_size_limit(http: httpx.Client, path: str, field: str) -> None:
    value = "x" * (8 * 1024 * 1024 + 1) if field.startswith("known_speaker_references") else BIG
    response = http.post(path, headers=AUTH, data={"model": "whisper-1", field: value},
                         files={"file": ("a.wav", jfk_wav().read_bytes()[:32_044])})
    assert_openai_error(response, 400, field)


def test_bodies_and_files_are_bounded(secure: Served) -> None:
    with run_frontend(secure, api_keys=[API_KEY], max_upload_bytes=1024 * 1024) as base_url:
        client = httpx.Client(base_url=base_url, headers=AUTH, timeout=60)
        for path in ("/v1/audio/transcriptions", "/speech-to-text", "/v1/speakers"):
            response = client.post(path, data={"model": "whisper-1"}, files={"file": ("a.wav", bytes(1024 * 1024 + 1))})
            assert_openai_error(response, 413)
        big_json = b'{"model": "whisper-1", "messages": [], "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
        for path in ("/v1/chat/completions", "/", "/service/combine", "/speech-to-text-url"):
            response = client.post(path, content=big_json, headers={"content-type": "application/json"})
            assert_openai_error(response, 413)


# --------------------------------------------------------------------------------------------------
# SSRF through audio URLs and webhooks


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8001/", "http://localhost/a.wav", "http://[::1]/a.wav", "http://169.254.169.254/latest/meta-data/",
     "http://2130706433/a.wav", "http://0x7f.1/a.wav", "http://10.0.0.1/a.wav", "http://[::ffff:127.0.0.1]/a.wav",
     "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/a.wav",
     f"http://user:secret@{PUBLIC_IP}/a.wav", "http:///a.wav", "javascript:alert(1)"],
)
def test_audio_urls_to_private_or_odd_places_are_refused(http: httpx.Client, url: str) -> None:
    assert_openai_error(http.post("/speech-to-text-url", data={"url": url}, headers=AUTH), 400, "url")
    assert_openai_error(http.post("/", json={"url": url, "is_async": True}, headers=AUTH), 400, "url")


def test_webhooks_to_private_addresses_are_refused(http: httpx.Client) -> None:
    hits: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        # insanely-fast-whisper: refused when the task is submitted
        refused = http.post("/", json={"url": f"http://{PUBLIC_IP}/a.wav", "is_async": True,
                                       "webhook": {"url": hook}}, headers=AUTH)
        assert_openai_error(refused, 400, "webhook")
        # whisperX: accepted with the task, refused when delivered; the listener never hears of it
        queued = http.post("/speech-to-text", headers=AUTH, data={"webhook_url": hook},
                           files={"file": ("a.wav", jfk_wav().read_bytes()[:32_044])})
        assert queued.status_code == 200, queued.text
        task_id = queued.json()["identifier"]
        deadline = time.monotonic() + 120
        task: dict[str, Any] = {}
        while time.monotonic() < deadline:
            task = http.get(f"/task/{task_id}", headers=AUTH).json()
            if task["status"] in ("completed", "failed") and (task["webhook"] or {}).get("state") == "failed":
                break
            time.sleep(0.5)
        assert task["webhook"]["state"] == "failed", task
        assert "public" in task["webhook"]["last_error"]
        assert hits == []
    finally:
        server.shutdown()


# --------------------------------------------------------------------------------------------------
# Secrets (keep this last: it reads the log of everything above)


def test_secrets_never_appear_in_the_log(http: httpx.Client, secure: Served) -> None:
    # Make sure each secret had a chance to be logged: used, refused, and in failing requests.
    http.get("/v1/models", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    http.get("/v1/models", headers={"x-admin-api-key": ADMIN_KEY})
    http.post("/v1/audio/transcriptions", headers={"Authorization": f"Bearer {OTHER_KEY}"},
              data={"model": "whisper-1"}, files={"file": ("a.wav", b"not audio")})
    log = secure.log()
    assert "GET /v1/models" in log or "/v1/models" in log, "the log did not capture requests"
    for secret in SECRETS:
        assert secret not in log, f"a secret ({secret[:6]}...) appears in the log"


async def test_a_failing_database_url_keeps_its_password_out_of_errors(tmp_path: Path) -> None:
    """What start-up would log when PostgreSQL cannot be reached: the error and its whole traceback."""
    from frontend.database import open_database

    for url in (f"postgresql://test:{DB_PASSWORD}@127.0.0.1:1/tasks", f"mysql://test:{DB_PASSWORD}@db/tasks"):
        with pytest.raises(Exception) as info:  # whatever the driver raises
            await open_database(url, tmp_path)
        logged = "".join(traceback.format_exception(info.value))
        assert DB_PASSWORD not in logged, logged
