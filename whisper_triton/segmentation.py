"""Where someone speaks: pyannote's segmentation-3.0 model in plain torch, on any device.

The network is pyannote.audio's PyanNet (SincNet filters, a bidirectional LSTM, two linear layers and a
powerset classifier over up to 3 local speakers, at most 2 at once), rebuilt here with the checkpoint's own
parameter names so that its state dict loads strictly. It slides over the audio as pyannote's
`SpeakerDiarization` pipeline runs it (10 s chunks every 1 s), and a frame is speech where the number of
speakers, averaged over the chunks that see it and rounded, is at least one: pyannote's `speaker_count`
with no warm-up. tests/unit/test_segmentation.py checks both against pyannote.audio where it is installed.

Written so that the embedded diarizer needs neither pyannote.audio nor torchaudio (whose builds must match
torch's: NVIDIA's torch in the GPU image has none on PyPI); the checkpoint's pickled pyannote metadata is
read through stand-in classes under `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
STEP_RATIO = 0.1  # chunk step as a fraction of the chunk (pyannote's segmentation_step)
BATCH_SIZE = 32
# SincNet's convolutions and poolings: kernel sizes and strides, from the waveform to the frames.
_KERNELS = (251, 3, 5, 3, 5, 3)
_PICKLED = ("Specifications", "Problem", "Resolution")  # pyannote.audio.core.task classes in the checkpoint


@dataclass(frozen=True)
class FrameGrid:
    """Frame i spans [start + i * step, start + i * step + duration) seconds."""

    start: float
    step: float
    duration: float


@dataclass(frozen=True)
class Specification:
    """What the checkpoint says about its task."""

    duration: float  # seconds per chunk
    speakers: int  # local speakers per chunk
    max_together: int  # speakers at once (powerset)


class _ParamSinc(nn.Module):
    """asteroid-filterbanks' ParamSincFB: band-pass filters from learned low and band frequencies."""

    window_: torch.Tensor
    n_: torch.Tensor

    def __init__(self, filters: int = 80, kernel: int = 251, min_low_hz: float = 50, min_band_hz: float = 50) -> None:
        super().__init__()
        half = kernel // 2
        self.kernel, self.min_low_hz, self.min_band_hz = kernel, min_low_hz, min_band_hz
        self.low_hz_ = nn.Parameter(torch.zeros(filters // 2, 1))
        self.band_hz_ = nn.Parameter(torch.zeros(filters // 2, 1))
        self.register_buffer("window_", torch.zeros(half))
        self.register_buffer("n_", torch.zeros(1, half))

    def filters(self) -> torch.Tensor:
        low = self.min_low_hz + torch.abs(self.low_hz_)
        high = torch.clamp(low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, SAMPLE_RATE / 2)
        band = (high - low)[:, 0]
        ft_low, ft_high = torch.matmul(low, self.n_), torch.matmul(high, self.n_)
        cos_left = ((torch.sin(ft_high) - torch.sin(ft_low)) / (self.n_ / 2)) * self.window_
        sin_left = ((torch.cos(ft_low) - torch.cos(ft_high)) / (self.n_ / 2)) * self.window_
        cos = torch.cat([cos_left, 2 * band.view(-1, 1), torch.flip(cos_left, dims=[1])], dim=1)
        sin = torch.cat([sin_left, torch.zeros_like(band.view(-1, 1)), -torch.flip(sin_left, dims=[1])], dim=1)
        filters = torch.cat([cos / (2 * band[:, None]), sin / (2 * band[:, None])], dim=0)
        return filters.view(-1, 1, self.kernel)


class _SincEncoder(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.filterbank = _ParamSinc()
        self.stride = stride

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return F.conv1d(waveforms, self.filterbank.filters(), stride=self.stride)


class _SincNet(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.conv1d = nn.ModuleList([_SincEncoder(stride), nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.pool1d = nn.ModuleList([nn.MaxPool1d(3, stride=3) for _ in range(3)])
        self.norm1d = nn.ModuleList([nn.InstanceNorm1d(n, affine=True) for n in (80, 60, 60)])

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        outputs = self.wav_norm1d(waveforms)
        for index, (conv, pool, norm) in enumerate(zip(self.conv1d, self.pool1d, self.norm1d, strict=True)):
            outputs = conv(outputs)
            if index == 0:
                outputs = torch.abs(outputs)
            outputs = F.leaky_relu(norm(pool(outputs)))
        return outputs


class SegmentationNetwork(nn.Module):
    """PyanNet: (batch, 1, samples) -> (batch, frames, powerset classes) log-probabilities."""

    def __init__(self, hparams: dict[str, Any], specification: Specification) -> None:
        super().__init__()
        lstm, linear = hparams["lstm"], hparams["linear"]
        if not lstm.get("monolithic", True) or not lstm.get("bidirectional", True):
            raise ValueError("only PyanNet with one bidirectional LSTM module is supported")
        self.specification = specification
        self.stride = int(hparams["sincnet"]["stride"])
        self.sincnet = _SincNet(self.stride)
        hidden = int(lstm["hidden_size"])
        self.lstm = nn.LSTM(60, hidden, num_layers=int(lstm["num_layers"]), bidirectional=True, batch_first=True)
        sizes = [2 * hidden] + [int(linear["hidden_size"])] * int(linear["num_layers"])
        self.linear = nn.ModuleList([nn.Linear(a, b) for a, b in pairwise(sizes)])
        self.classifier = nn.Linear(sizes[-1], len(powerset_cardinality(specification)))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(self.sincnet(waveforms).transpose(1, 2))
        for layer in self.linear:
            outputs = F.leaky_relu(layer(outputs))
        return F.log_softmax(self.classifier(outputs), dim=-1)

    def frames(self) -> FrameGrid:
        """The output frames in seconds (pyannote's `Model.receptive_field`, started at 0 as aggregated)."""
        strides = (self.stride, 3, 1, 3, 1, 3)
        size = _receptive_field(1, strides)
        return FrameGrid(0.0, (_receptive_field(2, strides) - size) / SAMPLE_RATE, size / SAMPLE_RATE)


def powerset_cardinality(specification: Specification) -> list[int]:
    """Number of speakers of each powerset class, in pyannote's order ({}, {0}, {1}, ..., {0, 1}, ...)."""
    return [size for size in range(specification.max_together + 1)
            for _ in combinations(range(specification.speakers), size)]


def _receptive_field(frames: int, strides: tuple[int, ...]) -> int:
    size = frames
    for kernel, stride in reversed(list(zip(_KERNELS, strides, strict=True))):
        size = kernel + (size - 1) * stride
    return size


class _Pickled:
    """Stands in for the pyannote.audio classes pickled in the checkpoint; keeps their state."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


def load_segmentation(path: Path) -> SegmentationNetwork:
    """The network of a pyannote segmentation checkpoint (`pytorch_model.bin`), on CPU, in eval mode."""
    from torch.torch_version import TorchVersion

    stand_ins = [(type(name, (_Pickled,), {}), f"pyannote.audio.core.task.{name}") for name in _PICKLED]
    with torch.serialization.safe_globals([*stand_ins, TorchVersion]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    task = checkpoint["pyannote.audio"]["specifications"].state
    architecture = checkpoint["pyannote.audio"].get("architecture", {}).get("class")
    if architecture != "PyanNet" or not task.get("powerset"):
        raise ValueError(f"{path} is not a powerset PyanNet segmentation checkpoint ({architecture})")
    specification = Specification(float(task["duration"]), len(task["classes"]), int(task["powerset_max_classes"]))
    network = SegmentationNetwork(checkpoint["hyper_parameters"], specification)
    network.load_state_dict(checkpoint["state_dict"], strict=True)
    return network.eval()


def speaker_counts(network: SegmentationNetwork, waveform: torch.Tensor,
                   batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, FrameGrid]:
    """Speakers at each frame of a 1-D 16 kHz waveform (uint8, pyannote's `speaker_count`), and the frames.

    The network runs on its own device; only the per-chunk counts come back to the host.
    """
    specification = network.specification
    window = math.floor(specification.duration * SAMPLE_RATE)
    step_seconds = STEP_RATIO * specification.duration
    step = round(step_seconds * SAMPLE_RATE)
    device = next(network.parameters()).device
    cardinality = torch.tensor(powerset_cardinality(specification), dtype=torch.float32, device=device)
    samples = len(waveform)
    chunks = waveform.unfold(0, window, step) if samples >= window else waveform.new_zeros((0, window))
    pieces = list(torch.split(chunks, batch_size)) if len(chunks) else []
    if samples < window or (samples - window) % step > 0:
        pieces.append(F.pad(waveform[len(chunks) * step:], (0, window - (samples - len(chunks) * step)))[None])
    counts = []
    with torch.inference_mode():
        for piece in pieces:
            scores = network(piece[:, None].to(device))
            counts.append(cardinality[scores.argmax(dim=-1)].cpu().numpy())
    return _aggregate(np.concatenate(counts), step_seconds, specification.duration, network.frames())


def _aggregate(counts: np.ndarray, step: float, duration: float, frames: FrameGrid) -> tuple[np.ndarray, FrameGrid]:
    """Overlap-add of the chunks' counts, averaged over the chunks that see each frame, rounded (pyannote's
    `Inference.aggregate` without Hamming window or warm-up, then `np.rint`)."""
    chunk_count, per_chunk = counts.shape

    def closest(t: float) -> int:
        return int(np.rint((t - frames.start - 0.5 * frames.duration) / frames.step))

    total = closest(duration + (chunk_count - 1) * step + 0.5 * frames.duration) + 1
    summed = np.zeros(total, dtype=np.float32)
    seen = np.zeros(total, dtype=np.float32)
    for index in range(chunk_count):
        first = closest(index * step + 0.5 * frames.duration)
        summed[first: first + per_chunk] += counts[index]
        seen[first: first + per_chunk] += 1.0
    average = summed / np.maximum(seen, np.float32(1e-12))
    average[seen == 0] = 0.0
    return np.rint(average).astype(np.uint8), FrameGrid(0.0, frames.step, frames.duration)
