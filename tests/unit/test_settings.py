"""Model settings from WHISPER_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisper_triton.settings import ModelSettings, SettingsError, model_settings


def test_defaults() -> None:
    settings = model_settings({})
    assert settings == ModelSettings()
    assert (settings.model, settings.device, settings.compute_type) == ("base", "cpu", "int8")
    assert (settings.cpu_threads, settings.beam_size) == (0, 1)
    assert settings.max_audio_seconds == 4 * 3600.0
    assert (settings.max_windows_in_flight, settings.bls_threads) == (64, 64)
    assert (settings.engine_workers, settings.engine_max_batch, settings.entry_instances) == (0, 8, 1)
    assert (settings.loop_check, settings.hallucination_silence_threshold) == (True, 2.0)
    assert (settings.diarization, settings.diarization_device) == ("embedded", "auto")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "CUDA:1"])
def test_diarization_devices(device: str) -> None:
    assert model_settings({"WHISPER_DIARIZATION_DEVICE": device}).diarization_device == device


def test_values_are_converted_from_strings() -> None:
    settings = model_settings(
        {
            "WHISPER_MODEL": "tiny.en",
            "WHISPER_DEVICE": "cuda",
            "WHISPER_COMPUTE_TYPE": "float16",
            "WHISPER_CPU_THREADS": "4",
            "WHISPER_BEAM_SIZE": "5",
            "WHISPER_MAX_AUDIO_SECONDS": "90.5",
            "WHISPER_MAX_WINDOWS_IN_FLIGHT": "8",
            "WHISPER_BLS_THREADS": "2",
            "WHISPER_LOOP_CHECK": "false",
            "WHISPER_HALLUCINATION_SILENCE_THRESHOLD": "0",
        }
    )
    assert settings == ModelSettings(
        model="tiny.en",
        device="cuda",
        compute_type="float16",
        cpu_threads=4,
        beam_size=5,
        max_audio_seconds=90.5,
        max_windows_in_flight=8,
        bls_threads=2,
        loop_check=False,
        hallucination_silence_threshold=0.0,
    )


def test_empty_and_unrelated_variables_are_ignored() -> None:
    settings = model_settings({"WHISPER_BEAM_SIZE": "", "WHISPER_UNKNOWN": "x", "BEAM_SIZE": "9"})
    assert settings == ModelSettings()


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPER_BEAM_SIZE", "3")
    assert model_settings().beam_size == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WHISPER_BEAM_SIZE", "abc"),
        ("WHISPER_BEAM_SIZE", "2.5"),
        ("WHISPER_CPU_THREADS", "many"),
        ("WHISPER_MAX_AUDIO_SECONDS", "one hour"),
        ("WHISPER_MAX_WINDOWS_IN_FLIGHT", "[1, 2]"),
        ("WHISPER_LOOP_CHECK", "sometimes"),
        ("WHISPER_HALLUCINATION_SILENCE_THRESHOLD", "long"),
    ],
)
def test_a_malformed_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        model_settings({variable: value})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WHISPER_BEAM_SIZE", "0"),
        ("WHISPER_BEAM_SIZE", "17"),
        ("WHISPER_CPU_THREADS", "-1"),
        ("WHISPER_MAX_AUDIO_SECONDS", "0"),
        ("WHISPER_MAX_AUDIO_SECONDS", "-5"),
        ("WHISPER_MAX_AUDIO_SECONDS", "nan"),
        ("WHISPER_MAX_WINDOWS_IN_FLIGHT", "0"),
        ("WHISPER_BLS_THREADS", "0"),
        ("WHISPER_HALLUCINATION_SILENCE_THRESHOLD", "-1"),
        ("WHISPER_HALLUCINATION_SILENCE_THRESHOLD", "nan"),
        ("WHISPER_DIARIZATION_DEVICE", "gpu"),
        ("WHISPER_DIARIZATION_DEVICE", "cuda:x"),
    ],
)
def test_an_out_of_range_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        model_settings({variable: value})


@pytest.mark.parametrize(("variable", "value"), [("WHISPER_BEAM_SIZE", "16"), ("WHISPER_CPU_THREADS", "0")])
def test_range_limits_are_inclusive(variable: str, value: str) -> None:
    model_settings({variable: value})


def test_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert model_settings({"WHISPER_CACHE_DIR": "~/models"}).cache_path() == tmp_path / "models"
    monkeypatch.setenv("WHISPER_CACHE_DIR", str(tmp_path / "env-cache"))
    assert model_settings({}).cache_path() == tmp_path / "env-cache"
    monkeypatch.delenv("WHISPER_CACHE_DIR")
    assert model_settings({}).cache_path() == tmp_path / ".cache" / "whisper-triton"


@pytest.mark.parametrize(("value", "enabled"), [("embedded", True), ("OFF", False), ("false", False), ("0", False),
                                                ("pyannote/speaker-diarization-3.1", True)])
def test_diarization_is_on_unless_turned_off(value: str, enabled: bool) -> None:
    assert model_settings({"WHISPER_DIARIZATION": value}).diarization_enabled is enabled
    assert ModelSettings().diarization_enabled
