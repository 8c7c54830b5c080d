"""Model management over HTTP against the real stack: the operator, with only the admin key, lists what could
be served, fetches a second model (two requests at once), loads it, transcribes with it through the openai SDK,
finds it again after a restart, unloads and deletes it; a Hugging Face checkpoint from
WHISPER_MODEL_SOURCE_DIR is converted; bad ids, unknown models, missing or non-admin keys are refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.assets import JFK_TEXT, jfk_wav
from harness.stack import Served, start_served
from harness.text import wer
from harness.toy_checkpoint import write_toy_checkpoint
from whisper_triton import models_contract

ADMIN_KEY = "sk-admin-models-0123456789"
ALICE_KEY = "sk-alice-models-0123456789"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("model-management")
    write_toy_checkpoint(root / "sources" / "toy")
    return {"root": root, "cache": root / "cache", "sources": root / "sources", "data": root / "data"}


def _serve(folders: dict[str, Path]) -> Served:
    return start_served(folders["root"], "tiny.en", WHISPER_MODELS="tiny.en", ADMIN_API_KEY=ADMIN_KEY,
                        FRONTEND_API_KEYS=f"alice:{ALICE_KEY}", WHISPER_CACHE_DIR=str(folders["cache"]),
                        WHISPER_MODEL_SOURCE_DIR=str(folders["sources"]), FRONTEND_DATA_DIR=str(folders["data"]),
                        HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def served(folders: dict[str, Path]) -> Iterator[Served]:
    stack = _serve(folders)
    try:
        yield stack
    finally:
        stack.stop()


def _admin(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)


def _states(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/models", params={"all": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    return {m["id"]: m for m in body["data"]}


def _wait_for(client: httpx.Client, model: str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = _states(client)[model]
        if record["state"] in states:
            return record
        assert time.monotonic() < deadline, f"{model} stayed {record}"
        time.sleep(0.5)


def _sdk(served: Served, key: str = ALICE_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=key, max_retries=0, timeout=300)


def _transcribe(served: Served, model: str) -> str:
    with jfk_wav().open("rb") as audio:
        return _sdk(served).audio.transcriptions.create(model=model, file=audio).text


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_the_catalogue_lists_what_could_be_served(served: Served) -> None:
    with _admin(served) as admin:
        states = _states(admin)
    assert list(states)[:3] == ["tiny.en", "base", "toy"]
    assert (states["tiny.en"]["state"], states["tiny.en"]["default"]) == ("loaded", True)
    assert (states["base"]["state"], states["base"]["source"]) == ("not_downloaded", "embedded")
    assert (states["toy"]["state"], states["toy"]["source"]) == ("not_downloaded", "source_dir")
    assert (states["large-v3"]["state"], states["large-v3"]["source"]) == ("not_downloaded", "hub")
    # Without `all`, OpenAI's shape and only what is served: the SDK keeps working.
    ids = [m.id for m in _sdk(served).models.list()]
    assert ids[0] == "tiny.en" and "whisper-1" in ids and "base" not in ids and "toy" not in ids


def test_a_checkpoint_from_the_source_folder_is_converted_then_deleted(served: Served,
                                                                       folders: dict[str, Path]) -> None:
    with _admin(served) as admin, ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: admin.post("/v1/models/toy"), range(2)))
        assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
        record = _wait_for(admin, "toy", ("available", "failed"))
        assert record["state"] == "available" and record["error"] is None and record["bytes"] > 0, record
        assert (folders["cache"] / "managed" / "toy" / "model" / "model.bin").is_file()
        assert not list((folders["cache"] / "managed" / "toy").glob(".converting-*"))
        deleted = admin.delete("/v1/models/toy")
        assert deleted.status_code == 200, deleted.text
        assert _states(admin)["toy"]["state"] == "not_downloaded"
        assert not (folders["cache"] / "managed" / "toy").exists()


def test_a_hub_model_fetched_offline_fails_with_a_clear_error(served: Served) -> None:
    with _admin(served) as admin:
        response = admin.post("/v1/models/large-v3")
        assert response.status_code in (200, 202), response.text
        record = _wait_for(admin, "large-v3", ("failed", "available"), timeout=60)
        assert record["state"] == "failed" and "Hugging Face Hub" in record["error"], record
        _error(admin.post("/v1/models/large-v3/load"), 409)  # not on disk
        assert admin.delete("/v1/models/large-v3").status_code == 200  # a failed fetch can be forgotten
        assert _states(admin)["large-v3"]["state"] == "not_downloaded"


def test_grpc_clients_manage_models_through_whisper_models(served: Served) -> None:
    client = grpcclient.InferenceServerClient(served.grpc_url)
    try:
        def call(action: str, model: str = "") -> Any:
            inputs = []
            for name, array in models_contract.request_arrays(action, model).items():
                tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            return json.loads(client.infer(models_contract.MODELS_MODEL, inputs).as_numpy(models_contract.RESULT)[0])

        listed = {record["id"]: record for record in call("list")}
        assert listed["tiny.en"]["state"] == "loaded" and listed["toy"]["source"] == "source_dir"
        assert call("get", "base")["state"] == "not_downloaded"
        for action, model, code in (("get", "nosuch", "not_found"), ("fetch", "../etc", "invalid_value"),
                                    ("unload", "tiny.en", "conflict"), ("jump", "base", "invalid_value")):
            with pytest.raises(InferenceServerException) as raised:
                call(action, model)
            assert f"[{code}(" in str(raised.value)
    finally:
        client.close()


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("GET", "/v1/models?all=true", {}, 401),
    ("POST", "/v1/models/base", {}, 401),
    ("DELETE", "/v1/models/base", {}, 401),
    ("GET", "/v1/models?all=true", {"Authorization": f"Bearer {ALICE_KEY}"}, 403),
    ("POST", "/v1/models/base", {"Authorization": f"Bearer {ALICE_KEY}"}, 403),
    ("POST", "/v1/models/base/load", {"Authorization": f"Bearer {ALICE_KEY}"}, 403),
    ("DELETE", "/v1/models/base", {"Authorization": f"Bearer {ALICE_KEY}"}, 403),
    ("POST", "/v1/models/nosuch", {"x-admin-api-key": ADMIN_KEY}, 404),
    ("DELETE", "/v1/models/nosuch", {"x-admin-api-key": ADMIN_KEY}, 404),
    ("POST", "/v1/models/..%2F..%2Fetc", {"x-admin-api-key": ADMIN_KEY}, 400),
    ("POST", "/v1/models/a%2F..%2F..%2Fetc/load", {"x-admin-api-key": ADMIN_KEY}, 400),
    # The router folds `//`: the id is `etc/passwd`, a Hub id kept as `etc--passwd` in the cache, never fetched.
    ("DELETE", "/v1/models/%2Fetc%2Fpasswd", {"x-admin-api-key": ADMIN_KEY}, 404),
    ("POST", "/v1/models/a/b/c", {"x-admin-api-key": ADMIN_KEY}, 400),
    ("POST", "/v1/models/.hidden", {"x-admin-api-key": ADMIN_KEY}, 400),
    ("POST", "/v1/models/tiny.en/unload", {"x-admin-api-key": ADMIN_KEY}, 409),  # the default model
    ("DELETE", "/v1/models/tiny.en", {"x-admin-api-key": ADMIN_KEY}, 409),
    ("POST", "/v1/models/base/load", {"x-admin-api-key": ADMIN_KEY}, 409),  # not downloaded
    ("DELETE", "/v1/models/base", {"x-admin-api-key": ADMIN_KEY}, 404),  # not downloaded
])
def test_bad_requests_are_refused_in_openais_shape(served: Served, method: str, path: str,
                                                   headers: dict[str, str], status: int) -> None:
    response = httpx.request(method, served.base_url + path, headers=headers, timeout=60)
    error = _error(response, status)
    if status == 400:
        assert error["param"] == "model"


def test_a_second_model_fetched_loaded_used_kept_across_a_restart_unloaded_and_deleted(
        served: Served, folders: dict[str, Path]) -> None:
    with _admin(served) as admin, ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: admin.post("/v1/models/base"), range(2))  # two at once: one fetch
        for response in (first, second):
            assert response.status_code in (200, 202), response.text
            assert response.json()["id"] == "base"
            assert response.json()["state"] in ("downloading", "converting", "available")
        assert _wait_for(admin, "base", ("available", "failed"))["state"] == "available"
        with pytest.raises(openai.NotFoundError):
            _transcribe(served, "nosuch")
        loading = pool.submit(lambda: (admin.post("/v1/models/base/load"), time.monotonic()))
        time.sleep(0.5)  # the load under way (it warms the engine up: seconds)
        with _admin(served) as other:  # a list does not wait behind it
            during = _states(other)["base"]["state"]
        listed = time.monotonic()
        loaded, load_ended = loading.result()
        assert loaded.status_code == 200 and loaded.json()["state"] == "loaded", loaded.text
        assert listed < load_ended and during == "available", "the list waited behind the load"
        assert wer(JFK_TEXT, _transcribe(served, "base")) < 0.1
        assert "base" in [m.id for m in _sdk(served).models.list()]
        _error(admin.delete("/v1/models/base"), 409)  # loaded
        unloaded = admin.post("/v1/models/base/unload")
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "available", unloaded.text

    served.stop()  # the state is on disk: a restart finds the model fetched, and loads it on demand
    restarted = _serve(folders)
    try:
        with _admin(restarted) as admin:
            assert _states(admin)["base"]["state"] == "available"
            assert wer(JFK_TEXT, _transcribe(restarted, "base")) < 0.1  # an unloaded model loads on demand
            assert _states(admin)["base"]["state"] == "loaded"
            assert admin.post("/v1/models/base/unload").json()["state"] == "available"
            deleted = admin.delete("/v1/models/base")
            assert deleted.status_code == 200 and deleted.json() == {"id": "base", "deleted": True,
                                                                     "object": "model"}
            assert _states(admin)["base"]["state"] == "not_downloaded"
            assert "base" not in [m.id for m in _sdk(restarted).models.list()]
            with pytest.raises(openai.NotFoundError):
                _transcribe(restarted, "base")
            _error(admin.delete("/v1/models/base"), 404)
    finally:
        restarted.stop()
