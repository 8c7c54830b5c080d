"""Each API key sees only its own work (issue 15), against the real stack: two named keys and an admin key.

Alice creates a record through every route that creates one; Bob then calls every route that takes an id or
lists records, with each of Alice's ids. The routes come from the app itself: each must be in this file's
table (how Bob calls it, or why it holds no record), so a new route without an ownership check fails here.
Another key's id answers 404 with the body an unknown id gets; lists leave out other keys' records; nothing of
Alice's changes. The admin sees both keys' work and acts for one; without keys everything is one user's.
Claims of queued tasks are fair across keys, and each key has its own bound on queued tasks.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from frontend.app import create_app
from frontend.settings import FrontendSettings
from harness.assets import jfk_wav, wav_bytes
from harness.stack import Served, run_frontend
from tests.e2e.test_tasks import Peer, peer, upload, wait_task
from whisper_triton.audio import decode_audio

ADMIN_KEY = "adm-tenancy-5e4d3c2b1a"
ALICE = {"Authorization": "Bearer key-a"}
BOB = {"Authorization": "Bearer key-b"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
RETRY_AFTER_S = 7
MAX_QUEUED = 2  # per key
Route = tuple[str, str]


def jfk() -> bytes:
    return jfk_wav().read_bytes()


@dataclass
class Tenancy:
    base_url: str
    peer: Peer
    tasks: dict[Route, str]  # Alice's task created through each route
    speaker: str  # Alice's stored voice
    bobs_task: str

    def client(self, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120)


# --------------------------------------------------------------------------------------------------
# Every route, and how it is called: creating a record, with an id, listing records, or none of those.

def _recorded(client: httpx.Client, file_name: str) -> str:
    """The task a synchronous request was recorded as (the caller's newest of that file name)."""
    tasks = client.get("/task/all").json()["tasks"]
    return str(next(t["identifier"] for t in tasks if t["metadata"]["file_name"] == file_name))


def _queued(response: httpx.Response, field: str = "identifier") -> str:
    assert response.status_code == 200, response.text
    return str(response.json()[field])


TRANSCRIPT = json.dumps({"segments": [{"start": 0.0, "end": 11.0, "text": "ask not what your country can do"}]})


def _upload_to(path: str, **fields: str) -> Callable[[httpx.Client, Peer], str]:
    return lambda client, _: _queued(client.post(path, files={"file": ("s.wav", jfk())}, data=fields))


def _align(client: httpx.Client, _: Peer) -> str:
    files = {"file": ("a.wav", jfk()), "transcript": ("t.json", TRANSCRIPT)}
    return _queued(client.post("/service/align", files=files))


def _url_task(client: httpx.Client, audio: Peer) -> str:
    return _queued(client.post("/speech-to-text-url", data={"url": audio.url("/jfk.wav")}))


def _ifw_task(client: httpx.Client, audio: Peer) -> str:
    body = {"url": audio.url("/jfk.wav"), "is_async": True, "managed_task_id": "alices-own"}
    return _queued(client.post("/", json=body), "task_id")


def _synchronous(path: str, file_name: str, status: int) -> Callable[[httpx.Client, Peer], str]:
    def create(client: httpx.Client, _: Peer) -> str:
        response = client.post(path, files={"file": (file_name, jfk())}, data={"model": "whisper-1"})
        assert response.status_code == status, response.text
        return _recorded(client, file_name)

    return create


# Routes that create a record: Alice creates one through each (a task id).
CREATES: dict[Route, Callable[[httpx.Client, Peer], str]] = {
    ("POST", "/speech-to-text"): _upload_to("/speech-to-text"),
    ("POST", "/service/transcribe"): _upload_to("/service/transcribe"),
    ("POST", "/service/diarize"): _upload_to("/service/diarize"),
    ("POST", "/service/align"): _align,
    ("POST", "/speech-to-text-url"): _url_task,
    ("POST", "/"): _ifw_task,
    ("POST", "/v1/audio/transcriptions"): _synchronous("/v1/audio/transcriptions", "sync.wav", 200),
    # tiny.en cannot translate: the request fails, and is recorded as a failed task of its caller.
    ("POST", "/v1/audio/translations"): _synchronous("/v1/audio/translations", "translate.wav", 400),
}
# The stored voice, created by the fixture (its id is the speaker routes' record).
ENROLS: Route = ("POST", "/v1/speakers")

# Routes that take an id: Bob calls each with each of Alice's ids of its kind.
TASK_ROUTES: dict[Route, Callable[[httpx.Client, str], httpx.Response]] = {
    ("GET", "/task/{task_id:str}"): lambda c, i: c.get(f"/task/{i}"),
    ("GET", "/task/{task_id:str}/result"): lambda c, i: c.get(f"/task/{i}/result", params={"format": "txt"}),
    ("DELETE", "/task/{task_id:str}/delete"): lambda c, i: c.delete(f"/task/{i}/delete"),
    ("GET", "/status/{task_id:str}"): lambda c, i: c.get(f"/status/{i}"),
    ("DELETE", "/cancel/{task_id:str}"): lambda c, i: c.delete(f"/cancel/{i}"),
}
SPEAKER_ROUTES: dict[Route, Callable[[httpx.Client, str], httpx.Response]] = {
    ("GET", "/v1/speakers/{speaker_id:str}"): lambda c, i: c.get(f"/v1/speakers/{i}"),
    ("DELETE", "/v1/speakers/{speaker_id:str}"): lambda c, i: c.delete(f"/v1/speakers/{i}"),
}
# Routes that list records: the ids each shows the caller.
LISTS: dict[Route, Callable[[httpx.Client], set[str]]] = {
    ("GET", "/task/all"): lambda c: {t["identifier"] for t in c.get("/task/all").json()["tasks"]},
    ("GET", "/tasks"): lambda c: {t["task_id"] for t in c.get("/tasks").json()["tasks"]},
    ("GET", "/v1/speakers"): lambda c: {s["id"] for s in c.get("/v1/speakers").json()["data"]},
    # Identification ranks the stored voices: only the caller's are compared.
    ("POST", "/v1/speakers/identify"): lambda c: {m["id"] for m in c.post(
        "/v1/speakers/identify", files={"file": ("probe.wav", jfk())}).json()["matches"]},
}
# Routes that neither take a record's id nor show records, and why.
NO_RECORDS: dict[Route, str] = {
    ("GET", "/"): "the web page (its task list is /task/all)",
    ("GET", "/static/{file_path:path}"): "the web page's files",
    ("HEAD", "/static/{file_path:path}"): "the web page's files",
    ("GET", "/docs"): "API documentation", ("GET", "/docs/swagger"): "API documentation",
    ("GET", "/docs/openapi.json"): "API documentation", ("GET", "/docs/{path:str}"): "API documentation",
    ("GET", "/docs/oauth2-redirect.html"): "API documentation",
    ("GET", "/health"): "probe", ("GET", "/health/live"): "probe", ("GET", "/health/ready"): "probe",
    ("GET", "/metrics"): "counters by key name, no records",
    ("GET", "/v1/models"): "the served models, the same for every key",
    ("GET", "/v1/models/{model_id:path}"): "a model, the same for every key",
    ("POST", "/v1/models/{model_id:path}"): "model management: the admin key only, server-wide, no key's record",
    ("DELETE", "/v1/models/{model_id:path}"): "model management: the admin key only, server-wide, no key's record",
    ("GET", "/v1/logs"): "the server's log lines: the admin key only",
    ("GET", "/v1/logs/files"): "the server's log files: the admin key only",
    ("GET", "/v1/logs/download"): "the server's log files: the admin key only",
    ("POST", "/v1/audio/speech/timestamps"): "answers in its response; stores nothing",
    ("POST", "/service/combine"): "merges the body it is given; stores nothing",
    ("POST", "/v1/chat/completions"): "answers in its response; stores nothing",
    ("POST", "/v1/realtime/client_secrets"): "a short-lived key that acts as its caller; stores no record",
    ("POST", "/v1/realtime/transcription_sessions"): "a short-lived key that acts as its caller; stores no record",
}


def app_routes() -> set[Route]:
    app = create_app(FrontendSettings(models=["tiny.en"]))
    return {(method, route.path) for route in app.routes for handler in getattr(route, "route_handlers", [])
            for method in getattr(handler, "http_methods", ()) if method != "OPTIONS"}


def test_every_route_is_in_the_ownership_table() -> None:
    tables = [set(CREATES), {ENROLS}, set(TASK_ROUTES), set(SPEAKER_ROUTES), set(LISTS), set(NO_RECORDS)]
    covered = set().union(*tables)
    assert sum(len(t) for t in tables) == len(covered), "a route is in two tables"
    assert app_routes() - covered == set(), "routes without an ownership case: add them to this file's table"
    assert covered - app_routes() == set(), "the table names routes the app no longer has"
    with_ids = {route for route in app_routes() if "{" in route[1]}
    assert with_ids - set(TASK_ROUTES) - set(SPEAKER_ROUTES) == {
        r for r in NO_RECORDS if "{" in r[1]}  # every other route with an id serves no record


# --------------------------------------------------------------------------------------------------
# The stack: one frontend with two named keys and an admin key, Alice's records made once.

@pytest.fixture(scope="module")
def tenancy(served: Served) -> Iterator[Tenancy]:
    with peer() as hooks, run_frontend(
        served, api_keys=["alice:key-a", "bob:key-b"], admin_api_key=ADMIN_KEY, allow_private_urls=True,
        task_workers=2, key_max_queued_tasks=MAX_QUEUED, retry_after_s=RETRY_AFTER_S, webhook_attempts=1,
    ) as base_url:
        setup = Tenancy(base_url, hooks, {}, "", "")
        with setup.client(ALICE) as alice, setup.client(BOB) as bob:
            for route, create in CREATES.items():
                setup.tasks[route] = create(alice, hooks)
                wait_task(alice, setup.tasks[route], timeout=120)
            enrolled = alice.post("/v1/speakers", data={"name": "ann"}, files={"file": ("ann.wav", jfk())})
            assert enrolled.status_code == 201, enrolled.text
            setup.speaker = enrolled.json()["id"]
            setup.bobs_task = upload(bob, jfk())
            wait_task(bob, setup.bobs_task)
        yield setup


@pytest.fixture(scope="module")
def alices_before(tenancy: Tenancy) -> dict[str, Any]:
    """Everything Alice sees of her records, before Bob tries anything."""
    with tenancy.client(ALICE) as alice:
        return snapshot(alice, tenancy)


def snapshot(client: httpx.Client, tenancy: Tenancy) -> dict[str, Any]:
    views = {i: client.get(f"/task/{i}").json() for i in tenancy.tasks.values()}
    results = {i: client.get(f"/task/{i}/result", params={"format": "json"}).text for i in tenancy.tasks.values()}
    return {"views": views, "results": results, "speaker": client.get(f"/v1/speakers/{tenancy.speaker}").json(),
            "lists": {route: sorted(ids(client)) for route, ids in LISTS.items()}}


def test_each_creating_route_makes_a_record_of_its_caller(tenancy: Tenancy, alices_before: dict[str, Any]) -> None:
    views = alices_before["views"]
    assert len(set(tenancy.tasks.values())) == len(CREATES)
    for route, task_id in tenancy.tasks.items():
        assert views[task_id]["metadata"]["owner"] == "alice", route  # the key's name, never the key
        expected = "failed" if route == ("POST", "/v1/audio/translations") else "completed"
        assert views[task_id]["status"] == expected, (route, views[task_id])
    assert "key-a" not in json.dumps([alices_before["views"], alices_before["speaker"]])
    assert set(tenancy.tasks.values()) <= set(alices_before["lists"][("GET", "/task/all")])
    assert alices_before["lists"][("GET", "/v1/speakers")] == [tenancy.speaker]


def same_as_unknown(response: httpx.Response, unknown: httpx.Response, record_id: str, unknown_id: str) -> None:
    """404, with what an unknown id gets: the same body (but for the id it quotes) and headers."""
    assert response.status_code == unknown.status_code == 404, response.text
    assert response.text.replace(record_id, "<id>") == unknown.text.replace(unknown_id, "<id>")
    assert response.headers["content-type"] == unknown.headers["content-type"]
    assert response.json()["error"]["code"] in ("task_not_found", "speaker_not_found")


@pytest.mark.parametrize("route", list(TASK_ROUTES), ids=" ".join)
def test_another_keys_task_is_an_unknown_task(tenancy: Tenancy, alices_before: dict[str, Any], route: Route) -> None:
    call = TASK_ROUTES[route]
    with tenancy.client(BOB) as bob:
        for task_id in tenancy.tasks.values():
            unknown_id = uuid.uuid4().hex[: len(task_id)]
            same_as_unknown(call(bob, task_id), call(bob, unknown_id), task_id, unknown_id)


@pytest.mark.parametrize("route", list(SPEAKER_ROUTES), ids=" ".join)
def test_another_keys_voice_is_an_unknown_voice(tenancy: Tenancy, alices_before: dict[str, Any], route: Route) -> None:
    call = SPEAKER_ROUTES[route]
    unknown_id = f"spk_{uuid.uuid4().hex}"
    with tenancy.client(BOB) as bob:
        same_as_unknown(call(bob, tenancy.speaker), call(bob, unknown_id), tenancy.speaker, unknown_id)


@pytest.mark.parametrize("route", list(LISTS), ids=" ".join)
def test_lists_show_only_the_callers_records(tenancy: Tenancy, alices_before: dict[str, Any], route: Route) -> None:
    alices = {*tenancy.tasks.values(), tenancy.speaker}
    with tenancy.client(BOB) as bob, tenancy.client(ALICE) as alice:
        seen_by_bob = LISTS[route](bob)
        assert not seen_by_bob & alices
        if route[1].startswith("/task"):
            assert tenancy.bobs_task in seen_by_bob and tenancy.bobs_task not in LISTS[route](alice)
        assert LISTS[route](alice) & alices


def test_bob_cannot_use_alices_stored_voice(tenancy: Tenancy, alices_before: dict[str, Any]) -> None:
    form = {"model": "whisper-1", "response_format": "diarized_json", "known_speaker_names[]": "ann"}
    with tenancy.client(BOB) as bob, tenancy.client(ALICE) as alice:
        refused = bob.post("/v1/audio/transcriptions", files={"file": ("b.wav", jfk())}, data=form)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "speaker_not_found", refused.text
        named = alice.post("/v1/audio/transcriptions", files={"file": ("a.wav", jfk())}, data=form)
        assert named.status_code == 200, named.text
        assert {s["speaker"] for s in named.json()["segments"]} == {"ann"}
        # Bob may enrol a voice of the same name: names are per key.
        own = bob.post("/v1/speakers", data={"name": "ann"}, files={"file": ("ann.wav", jfk())})
        assert own.status_code == 201, own.text
        assert bob.delete(f"/v1/speakers/{own.json()['id']}").status_code == 200


def test_nothing_of_alices_changed_after_bobs_attempts(tenancy: Tenancy, alices_before: dict[str, Any]) -> None:
    with tenancy.client(ALICE) as alice:
        after = snapshot(alice, tenancy)
    for key in ("views", "results", "speaker"):
        assert after[key] == alices_before[key], key
    for route in (("GET", "/v1/speakers"), ("POST", "/v1/speakers/identify")):
        assert after["lists"][route] == alices_before["lists"][route]
    # Alice's lists only grew by her own later records (the voice test's sync request).
    assert set(alices_before["lists"][("GET", "/task/all")]) <= set(after["lists"][("GET", "/task/all")])


def test_webhooks_go_to_their_owners_hook_only(tenancy: Tenancy) -> None:
    sent: dict[str, str] = {}
    with peer() as alices_hook, peer() as bobs_hook:
        for headers, hook in ((ALICE, alices_hook), (BOB, bobs_hook)):
            with tenancy.client(headers) as client:
                task_id = _queued(client.post("/speech-to-text-url", data={
                    "url": tenancy.peer.url("/jfk.wav"), "webhook_url": hook.url("/hook")}))
                sent[hook.url("/")] = task_id
                wait_task(client, task_id)
        deadline = time.monotonic() + 30
        while not (alices_hook.posts and bobs_hook.posts):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # a stray second post would come now
        for hook in (alices_hook, bobs_hook):
            assert [json.loads(body)["identifier"] for _, body in hook.posts] == [sent[hook.url("/")]]
    with tenancy.client(BOB) as bob:
        assert bob.get(f"/task/{sent[alices_hook.url('/')]}").status_code == 404


def test_the_admin_sees_every_key_and_acts_for_one(tenancy: Tenancy) -> None:
    alices_task = tenancy.tasks[("POST", "/speech-to-text")]
    with tenancy.client(ADMIN) as admin:
        listed = {t["identifier"]: t["metadata"]["owner"] for t in admin.get("/task/all").json()["tasks"]}
        assert listed[alices_task] == "alice" and listed[tenancy.bobs_task] == "bob"
        assert admin.get(f"/task/{alices_task}").json()["metadata"]["owner"] == "alice"
        assert {t["owner"] for t in admin.get("/tasks").json()["tasks"]} >= {"alice", "bob"}
        assert tenancy.speaker in {s["id"] for s in admin.get("/v1/speakers").json()["data"]}
        assert admin.get(f"/v1/speakers/{tenancy.speaker}").status_code == 200
    as_bob = {**ADMIN, "x-act-as-key": "bob"}
    with tenancy.client(as_bob) as acting, tenancy.client(BOB) as bob, tenancy.client(ALICE) as alice:
        owners = {t["metadata"]["owner"] for t in acting.get("/task/all").json()["tasks"]}
        assert owners == {"bob"}  # only Bob's, as Bob sees them
        assert acting.get(f"/task/{alices_task}").status_code == 404
        assert acting.get(f"/v1/speakers/{tenancy.speaker}").status_code == 404
        made = upload(acting, jfk())  # owned by Bob: Bob sees it, Alice does not
        assert bob.get(f"/task/{made}").json()["metadata"]["owner"] == "bob"
        assert alice.get(f"/task/{made}").status_code == 404
        wait_task(bob, made)
    with tenancy.client(ADMIN) as admin:
        assert admin.delete(f"/task/{made}/delete").status_code == 200  # the admin manages every key's work
    with tenancy.client(BOB) as bob:
        assert bob.get(f"/task/{made}").status_code == 404


def test_without_keys_everything_is_one_users(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=120) as client:
        first, second = upload(client, jfk()), upload(client, jfk())
        listed = {t["identifier"]: t for t in client.get("/task/all").json()["tasks"]}
        assert {first, second} <= set(listed)
        assert "owner" not in listed[first]["metadata"]
        done = wait_task(client, first)
        assert done["status"] == "completed" and "owner" not in done["metadata"]
        assert client.get(f"/status/{second}").status_code == 200
        assert client.delete(f"/task/{first}/delete").status_code == 200


def long_audio(repeats: int = 4) -> bytes:
    samples = decode_audio(jfk()).samples
    return wav_bytes(np.tile(samples, repeats))


def test_claims_are_fair_and_each_key_has_its_own_queue_bound(tenancy: Tenancy) -> None:
    with tenancy.client(ALICE) as alice, tenancy.client(BOB) as bob:
        long = long_audio()
        running = []
        for _ in range(2):  # both workers busy with Alice's long files
            running.append(upload(alice, long))
            wait_task(alice, running[-1], until=("processing", "completed"))
        queued = [upload(alice, jfk()) for _ in range(MAX_QUEUED)]
        refused = alice.post("/speech-to-text", files={"file": ("over.wav", jfk())})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
        bobs = upload(bob, jfk())  # Bob is not held up by Alice's queue
        started: dict[str, datetime.datetime] = {}
        for client, task_id in [*((alice, t) for t in running + queued), (bob, bobs)]:
            task = wait_task(client, task_id)
            assert task["status"] == "completed", task
            started[task_id] = datetime.datetime.fromisoformat(task["metadata"]["start_time"])
    # First in, first out would start Bob's after both of Alice's queued ones (queued before it). Fair
    # claims start it once a worker is free and Alice has more running than Bob: before her last one.
    assert started[bobs] < started[queued[-1]], started
