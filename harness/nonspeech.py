"""Generated audio in which nobody speaks, for tests and benchmarks of what Whisper invents.

Every kind is synthesised from a seed (no download): silence, room tone, white and brown noise, mains
hum, music (chords, bass, drums), a steady tone, DTMF digits, clicks and breathing. Levels are those of
real recordings (room tone near -65 dBFS, noise and music near -20 dBFS), so that they meet the VAD and
Whisper as a microphone's would.
"""

from __future__ import annotations

import numpy as np

from whisper_triton.audio import SAMPLE_RATE

KINDS = ("silence", "room_tone", "white_noise", "brown_noise", "hum", "music", "tone", "dtmf", "clicks",
         "breathing")


def nonspeech(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """`seconds` of `kind` as float32 16 kHz mono."""
    n = max(1, round(seconds * SAMPLE_RATE))
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    t = np.arange(n) / SAMPLE_RATE
    if kind == "silence":
        audio = np.zeros(n)
    elif kind == "room_tone":
        audio = _level(_pink(rng, n), -65) + _level(np.sin(2 * np.pi * 50 * t), -75)
    elif kind == "white_noise":
        audio = _level(rng.standard_normal(n), -20)
    elif kind == "brown_noise":
        brown = np.cumsum(rng.standard_normal(n))
        brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # no drift: a random walk with a floor
        audio = _level(brown, -20)
    elif kind == "hum":
        mains = rng.choice([50.0, 60.0])
        audio = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
        audio = _level(audio, -25) + _level(rng.standard_normal(n), -60)
    elif kind == "music":
        audio = _level(_music(rng, t), -18)
    elif kind == "tone":
        audio = _level(np.sin(2 * np.pi * rng.choice([440.0, 1000.0, 1400.0]) * t), -12)
    elif kind == "dtmf":
        audio = _level(_dtmf(rng, n), -15)
    elif kind == "clicks":
        audio = _level(_clicks(rng, n), -30, peak=True)
    elif kind == "breathing":
        audio = _level(_breathing(rng, n), -38)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)


def _level(audio: np.ndarray, dbfs: float, peak: bool = False) -> np.ndarray:
    """Scales to an RMS (or peak) level in dBFS."""
    measure = float(np.max(np.abs(audio))) if peak else float(np.sqrt(np.mean(np.square(audio))))
    return audio * (10 ** (dbfs / 20) / measure) if measure > 0 else audio


def _shaped(rng: np.random.Generator, n: int, gain: np.ndarray) -> np.ndarray:
    """White noise shaped in frequency by `gain` (a function of the rfft bins)."""
    spectrum = np.fft.rfft(rng.standard_normal(n)) * gain
    return np.fft.irfft(spectrum, n)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    return _shaped(rng, n, 1 / np.sqrt(np.maximum(freqs, 20.0)))


def _music(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Four bars a loop of I-V-vi-IV: chords of rich tones, a bass line, kick, snare and hi-hat."""
    bpm = rng.uniform(90, 130)
    beat = 60 / bpm
    root = rng.uniform(196, 262)  # G3-C4
    progression = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
    bar = (t // (4 * beat)).astype(int) % 4
    in_beat = t % beat
    envelope = np.exp(-in_beat / (0.6 * beat))
    audio = np.zeros_like(t)
    for degree in range(3):
        semis = np.array([chord[degree] for chord in progression])[bar]
        freq = root * 2 ** (semis / 12)
        phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
        audio += envelope * sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.5
    bass_freq = root / 2 * 2 ** (np.array([c[0] for c in progression])[bar] / 12)
    audio += 0.8 * envelope * np.sin(2 * np.pi * np.cumsum(bass_freq) / SAMPLE_RATE)
    kick = np.exp(-in_beat / 0.08) * np.sin(2 * np.pi * 55 * in_beat) * ((t // beat) % 2 == 0)
    noise = rng.standard_normal(len(t))
    snare = np.exp(-in_beat / 0.05) * noise * ((t // beat) % 2 == 1) * 0.4
    half = t % (beat / 2)
    hat = np.exp(-half / 0.01) * np.diff(noise, prepend=0.0) * 0.15
    return audio + 1.5 * kick + snare + hat


_DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
         "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
         "0": (941, 1336), "#": (941, 1477)}


def _dtmf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Digits of 100 ms with 100 ms gaps, a pause now and then (someone dialling)."""
    audio = np.zeros(n)
    position = 0
    while position < n:
        low, high = _DTMF[str(rng.choice(list(_DTMF)))]
        length = min(SAMPLE_RATE // 10, n - position)
        t = np.arange(length) / SAMPLE_RATE
        audio[position : position + length] = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
        position += length + SAMPLE_RATE // 10 + (SAMPLE_RATE if rng.random() < 0.15 else 0)
    return audio


def _clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clicks (a keyboard, a pen) at about 4 a second, each a short decaying burst."""
    audio = np.zeros(n)
    decay = np.exp(-np.arange(160) / 20.0)
    for at in np.cumsum(rng.exponential(SAMPLE_RATE / 4, size=int(n / SAMPLE_RATE * 8) + 2)).astype(int):
        if at >= n:
            break
        burst = rng.standard_normal(160) * decay * rng.uniform(0.3, 1.0)
        audio[at : at + 160] += burst[: n - at]
    return audio


def _breathing(rng: np.random.Generator, n: int) -> np.ndarray:
    """Breaths into a microphone: band-limited noise swelling in and out about every 4 s."""
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    noise = _shaped(rng, n, ((freqs > 200) & (freqs < 2500)) / np.sqrt(np.maximum(freqs, 200.0)))
    t = np.arange(n) / SAMPLE_RATE
    period = rng.uniform(3.5, 4.5)
    phase = (t % period) / period
    swell = np.where(phase < 0.4, np.sin(np.pi * phase / 0.4), 0.0) + 0.6 * np.where(
        (phase > 0.5) & (phase < 0.95), np.sin(np.pi * (phase - 0.5) / 0.45), 0.0)
    return noise * swell
