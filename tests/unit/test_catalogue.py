"""The model catalogue: ids checked, state on disk (a restart sees it), one fetch when servers share a cache."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from whisper_triton.catalogue import Catalogue, check_id, fetched_spec, is_id
from whisper_triton.errors import ConflictError, InvalidRequestError, NotFoundError
from whisper_triton.models import flat_id, unflat_id
from whisper_triton.models_contract import Source, State
from whisper_triton.repository import engine_model_name


@pytest.mark.parametrize("model", ["base", "tiny.en", "large-v3-turbo", "openai/whisper-small", "my_model-2"])
def test_model_ids_accepted(model: str) -> None:
    assert check_id(model) == model


@pytest.mark.parametrize("model", ["", "..", "../etc", "/etc/passwd", "a/../b", "a/b/c", ".hidden", "a/.b",
                                   "x" * 200, "a b", "a\\b", "a/", "/a", "a..b", "naïve", "org--name", "org/a--b"])
def test_malformed_model_ids_are_refused(model: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        check_id(model)
    assert raised.value.param == "model"


def test_org_name_and_its_lookalikes_get_engines_of_their_own() -> None:
    names = {model: engine_model_name(model) for model in ("org/name", "org_name", "org-name", "org.name")}
    assert len(set(names.values())) == len(names) and names["org/name"] == "whisper_engine__org--name"
    assert engine_model_name("my model") == "whisper_engine__my_model"  # a configured folder's name


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}(/[A-Za-z0-9][A-Za-z0-9._-]{0,20})?", fullmatch=True))
def test_a_flat_id_reads_back_as_its_model_id(model: str) -> None:
    assume(is_id(model))
    assert "/" not in flat_id(model) and unflat_id(flat_id(model)) == model


def _fake_fetcher(log: Path, seconds: float = 0.0) -> Callable[[str, Source, Path, Callable[[State], None]], str]:
    def fetch(model: str, source: Source, folder: Path, report: Callable[[State], None]) -> str:
        with log.open("a") as out:
            out.write(f"{model}\n")
        report("converting")
        time.sleep(seconds)
        (folder / "model").mkdir(parents=True, exist_ok=True)
        (folder / "model" / "model.bin").write_bytes(b"x" * 10)
        return str(folder / "model")

    return fetch


def _source_dir(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "sources" / "toy"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text('{"model_type": "whisper"}')
    (tmp_path / "sources" / "not-a-model").mkdir()
    return tmp_path / "sources"


def test_listing_states_and_a_fetch_that_survives_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "fetches"
    catalogue = Catalogue(tmp_path / "cache", ["tiny.en"], _source_dir(tmp_path), _fake_fetcher(log))
    ids = catalogue.ids()
    assert ids[:3] == ["tiny.en", "base", "toy"] and "large-v3" in ids and "not-a-model" not in ids
    assert catalogue.record("tiny.en").state == "available" and catalogue.record("tiny.en").default
    assert catalogue.record("tiny.en", loaded=True).state == "loaded"
    toy = catalogue.record("toy")
    assert (toy.state, toy.source, toy.default) == ("not_downloaded", "source_dir", False)
    assert catalogue.record("small").source == "hub"
    catalogue.fetch("toy")
    catalogue.wait("toy", 10)
    toy = catalogue.record("toy")
    assert toy.state == "available" and toy.bytes >= 10 and toy.updated
    assert catalogue.spec("toy") == str(tmp_path / "cache" / "managed" / "toy" / "model")
    restarted = Catalogue(tmp_path / "cache", ["tiny.en"], tmp_path / "sources", _fake_fetcher(log))
    assert restarted.record("toy").state == "available" and restarted.fetched() == {"toy": catalogue.spec("toy")}
    assert fetched_spec(tmp_path / "cache", "toy") == catalogue.spec("toy")
    restarted.fetch("toy")  # already there: nothing fetched again
    restarted.wait("toy", 10)
    assert log.read_text().splitlines() == ["toy"]


def test_fetched_models_live_in_the_managed_folder_when_one_is_set(tmp_path: Path) -> None:
    managed = tmp_path / "elsewhere"
    catalogue = Catalogue(tmp_path / "cache", [], _source_dir(tmp_path), _fake_fetcher(tmp_path / "log"), root=managed)
    catalogue.fetch("toy")
    catalogue.wait("toy", 10)
    assert catalogue.spec("toy") == str(managed / "toy" / "model") and (managed / "toy" / "state.json").is_file()
    assert not (tmp_path / "cache" / "managed").exists()
    assert fetched_spec(tmp_path / "cache", "toy", managed) == catalogue.spec("toy")
    assert fetched_spec(tmp_path / "cache", "toy") is None


def test_delete_only_what_was_fetched_and_is_not_loaded_or_configured(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path / "cache", ["tiny.en"], _source_dir(tmp_path), _fake_fetcher(tmp_path / "log"))
    with pytest.raises(ConflictError):
        catalogue.delete("tiny.en")
    with pytest.raises(NotFoundError):
        catalogue.delete("toy")  # listed, not downloaded
    with pytest.raises(NotFoundError):
        catalogue.record("no-such-model")
    catalogue.fetch("toy")
    catalogue.wait("toy", 10)
    with pytest.raises(ConflictError):
        catalogue.delete("toy", loaded=True)
    catalogue.delete("toy")
    assert catalogue.record("toy").state == "not_downloaded" and catalogue.fetched() == {}
    assert not (tmp_path / "cache" / "managed" / "toy").exists()
    assert fetched_spec(tmp_path / "cache", "../cache/managed/toy") is None


def test_a_failed_fetch_records_why_and_can_be_retried(tmp_path: Path) -> None:
    def failing(model: str, source: Source, folder: Path, report: Callable[[State], None]) -> str:
        raise RuntimeError("Could not fetch 'Systran/faster-whisper-small' from the Hugging Face Hub (offline)")

    catalogue = Catalogue(tmp_path / "cache", ["tiny.en"], None, failing)
    catalogue.fetch("small")
    catalogue.wait("small", 10)
    record = catalogue.record("small")
    assert record.state == "failed" and "Hugging Face Hub" in (record.error or "")
    retry = Catalogue(tmp_path / "cache", ["tiny.en"], None, _fake_fetcher(tmp_path / "log"))
    retry.fetch("small")
    retry.wait("small", 10)
    assert retry.record("small").state == "available" and retry.record("small").error is None


def test_a_fetch_whose_server_stopped_reads_as_failed(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "managed" / "toy"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"state": "converting", "source": "source_dir", "updated": 1.0}')
    catalogue = Catalogue(tmp_path / "cache", ["tiny.en"], _source_dir(tmp_path))
    record = catalogue.record("toy")
    assert record.state == "failed" and "interrupted" in (record.error or "")


def _fetch_in_process(cache: Path, sources: Path, log: Path) -> None:
    catalogue = Catalogue(cache, ["tiny.en"], sources, _fake_fetcher(log, seconds=1.0))
    catalogue.fetch("toy")
    catalogue.wait("toy", 30)


def test_two_servers_sharing_a_cache_fetch_once(tmp_path: Path) -> None:
    sources, log = _source_dir(tmp_path), tmp_path / "fetches"
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_fetch_in_process, args=(tmp_path / "cache", sources, log))
                 for _ in range(2)]
    for process in processes:
        process.start()
    time.sleep(0.3)
    seen = Catalogue(tmp_path / "cache", ["tiny.en"], sources).record("toy").state
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert seen in ("downloading", "converting")  # a fetch under way shows from any process
    assert log.read_text().splitlines() == ["toy"]
    assert Catalogue(tmp_path / "cache", ["tiny.en"], sources).record("toy").state == "available"
