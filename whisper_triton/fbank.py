"""Kaldi filterbank features in plain torch, on any device: the front end of the CAM++ speaker embedding.

The same numbers as `torchaudio.compliance.kaldi.fbank` with the options 3D-Speaker trains CAM++ with
(25 ms frames every 10 ms, povey window, pre-emphasis 0.97, DC offset removed, FFT size 512, triangular
mel bins from 20 Hz to Nyquist on Kaldi's mel scale, log power, no dither, edges snipped), written here so
that the diarizer needs no torchaudio: NVIDIA's torch builds (the GPU image) have no matching torchaudio
on PyPI. tests/unit/test_segmentation.py compares the two where torchaudio is installed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0


def fbank(waveform: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Log mel filterbank energies (frames, num_mel_bins) of a 1-D float waveform at 16 kHz; no frames when
    the waveform is shorter than one frame."""
    if waveform.dim() != 1:
        raise ValueError("fbank takes one channel: a 1-D waveform")
    if len(waveform) < FRAME_LENGTH:
        return waveform.new_zeros((0, num_mel_bins))
    epsilon = torch.tensor(torch.finfo(torch.float).eps, device=waveform.device, dtype=waveform.dtype)
    frames = waveform.unfold(0, FRAME_LENGTH, FRAME_SHIFT)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.nn.functional.pad(frames[None], (1, 0), mode="replicate")[0, :, :-1]
    frames = frames - PREEMPHASIS * previous
    window = torch.hann_window(FRAME_LENGTH, periodic=False, device=waveform.device, dtype=waveform.dtype).pow(0.85)
    frames = torch.nn.functional.pad(frames * window, (0, FFT_SIZE - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = _mel_banks(num_mel_bins).to(device=waveform.device, dtype=waveform.dtype)
    return torch.max(torch.mm(power, banks.T), epsilon).log()


def _mel(hz: float) -> float:
    return 1127.0 * math.log(1.0 + hz / 700.0)


@lru_cache(maxsize=4)
def _mel_banks(num_bins: int) -> torch.Tensor:
    """Kaldi's triangular mel filters (num_bins, FFT_SIZE / 2 + 1) on CPU; the Nyquist bin gets no weight."""
    nyquist = 0.5 * SAMPLE_RATE
    low, high = _mel(LOW_FREQ), _mel(nyquist)
    delta = (high - low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left = low + index * delta
    center = low + (index + 1.0) * delta
    right = low + (index + 2.0) * delta
    mel = (1127.0 * (1.0 + (SAMPLE_RATE / FFT_SIZE) * torch.arange(FFT_SIZE / 2) / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks, (0, 1))
