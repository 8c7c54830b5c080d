"""Window planning: VAD spans, packing into <= 30 s windows, fixed windows."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.assets import jfk_wav
from harness.nonspeech import KINDS, nonspeech
from whisper_triton import vad as vad_module
from whisper_triton import windows
from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.vad import frame_count
from whisper_triton.windows import (
    CLIP_MARGIN_S,
    WINDOW_SAMPLES,
    Window,
    fixed_windows,
    meets_speech,
    pack_windows,
    plan_windows,
    speech_spans,
)

SENTENCES = (
    "And so my fellow Americans, ask not what your country can do for you.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to buy milk, bread and eggs on your way home tonight.",
)


def seconds(value: float) -> int:
    return int(value * SAMPLE_RATE)


def coverage(windows: list[Window], num_samples: int) -> np.ndarray:
    """How many windows hold each sample."""
    counts = np.zeros(num_samples, dtype=np.int64)
    for window in windows:
        counts[window.start : window.end] += 1
    return counts


def span_mask(spans: list[Window], num_samples: int) -> np.ndarray:
    mask = np.zeros(num_samples, dtype=bool)
    for span in spans:
        mask[span.start : span.end] = True
    return mask


def test_window_offset_and_duration() -> None:
    window = Window(seconds(1.5), seconds(4))
    assert window.offset == 1.5
    assert window.duration == 2.5


def test_pack_merges_consecutive_spans_while_the_window_fits() -> None:
    spans = [Window(0, seconds(5)), Window(seconds(6), seconds(10)), Window(seconds(29), seconds(35))]
    assert pack_windows(spans) == [Window(0, seconds(10)), Window(seconds(29), seconds(35))]


def test_pack_accepts_a_window_of_exactly_the_maximum() -> None:
    spans = [Window(0, seconds(10)), Window(seconds(20), seconds(30)), Window(seconds(30), seconds(31))]
    assert pack_windows(spans) == [Window(0, seconds(30)), Window(seconds(30), seconds(31))]


def test_pack_splits_a_span_longer_than_a_window() -> None:
    spans = [Window(seconds(2), seconds(72)), Window(seconds(75), seconds(80))]
    assert pack_windows(spans) == [
        Window(seconds(2), seconds(32)),
        Window(seconds(32), seconds(62)),
        # The tail of the long span and the next span fit one window together.
        Window(seconds(62), seconds(80)),
    ]


def test_pack_of_no_spans_is_empty() -> None:
    assert pack_windows([]) == []


@pytest.mark.parametrize("seed", range(20))
def test_pack_covers_every_span_sample_once_in_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    max_samples = 100
    spans: list[Window] = []
    position = int(rng.integers(0, 20))
    for _ in range(int(rng.integers(1, 30))):
        length = int(rng.integers(1, 260))  # some spans are longer than two windows
        spans.append(Window(position, position + length))
        position += length + int(rng.integers(0, 60))

    windows = pack_windows(spans, max_samples)

    assert all(0 < w.end - w.start <= max_samples for w in windows)
    assert all(a.end <= b.start for a, b in itertools.pairwise(windows))
    counts = coverage(windows, position)
    speech = span_mask(spans, position)
    assert np.all(counts[speech] == 1)
    # Windows start and end on speech: no window is made of silence at its edges.
    assert all(speech[w.start] and speech[w.end - 1] for w in windows)
    # Greedy: no two neighbouring windows could have been one.
    assert all(b.end - a.start > max_samples for a, b in itertools.pairwise(windows))


def test_fixed_windows_cover_the_audio() -> None:
    assert fixed_windows(seconds(70)) == [
        Window(0, seconds(30)),
        Window(seconds(30), seconds(60)),
        Window(seconds(60), seconds(70)),
    ]
    assert fixed_windows(seconds(60)) == [Window(0, seconds(30)), Window(seconds(30), seconds(60))]
    assert fixed_windows(5) == [Window(0, 5)]
    assert fixed_windows(0) == []


def test_plan_of_empty_audio_is_empty() -> None:
    assert plan_windows(np.zeros(0, dtype=np.float32)) == []


@pytest.mark.parametrize("length", [1, seconds(10), WINDOW_SAMPLES])
def test_short_silence_gives_no_window_unless_vad_is_off(length: int) -> None:
    # Whisper's own no-speech detection lets "you" and "Thank you." through: VAD decides.
    silence = np.zeros(length, dtype=np.float32)
    assert plan_windows(silence) == []
    assert plan_windows(silence, use_vad=False) == [Window(0, length)]


@pytest.mark.parametrize("kind", KINDS)
def test_no_window_where_nobody_speaks(kind: str) -> None:
    for length in (0.3, 8.0, 45.0):
        assert plan_windows(nonspeech(kind, length, seed=3)) == [], (kind, length)


def test_a_segment_counts_only_near_the_speech_vad_found() -> None:
    speech = ((2.0, 4.0), (10.0, 11.0))
    assert meets_speech(3.0, 3.5, speech) and meets_speech(4.3, 6.0, speech) and meets_speech(0.0, 1.6, speech)
    assert meets_speech(1.0, 30.0, speech)  # spans it
    assert not meets_speech(5.0, 9.4, speech) and not meets_speech(11.6, 20.0, speech)
    assert not meets_speech(0.0, 1.0, ())


def test_plan_without_vad_uses_fixed_windows() -> None:
    samples = np.zeros(seconds(70), dtype=np.float32)
    assert plan_windows(samples, use_vad=False) == fixed_windows(seconds(70))


def test_plan_of_long_silence_with_vad_is_empty() -> None:
    assert plan_windows(np.zeros(seconds(40), dtype=np.float32)) == []


def espeak(text: str, directory: Path) -> np.ndarray:
    """Synthetic speech from espeak-ng, decoded to 16 kHz mono like a request's audio."""
    path = directory / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return decode_audio(path.read_bytes()).samples


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[Window]]:
    """Three sentences separated by 12 s of silence (37 s in all), and where each sentence is."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    directory = tmp_path_factory.mktemp("espeak")
    pieces = [np.zeros(seconds(2), dtype=np.float32)]
    sentences: list[Window] = []
    position = seconds(2)
    for i, text in enumerate(SENTENCES):
        speech = espeak(text, directory)
        loud = np.nonzero(np.abs(speech) > 1e-3)[0]
        sentences.append(Window(position + int(loud[0]), position + int(loud[-1]) + 1))
        pieces.append(speech)
        position += len(speech)
        gap = seconds(12 if i < len(SENTENCES) - 1 else 2)
        pieces.append(np.zeros(gap, dtype=np.float32))
        position += gap
    return np.concatenate(pieces), sentences


def test_speech_spans_fall_on_speech_not_on_silence(spoken: tuple[np.ndarray, list[Window]]) -> None:
    samples, sentences = spoken
    spans = speech_spans(samples)

    assert spans, "VAD found no speech"
    pad = seconds(0.5)  # Silero's padding (200 ms) plus its 32 ms frames
    for span in spans:
        assert any(s.start - pad <= span.start and span.end <= s.end + pad for s in sentences), span
    for sentence in sentences:
        inside = [s for s in spans if s.start < sentence.end and sentence.start < s.end]
        assert inside, f"no span on the sentence at {sentence.offset:.1f} s"
        # The spans cover (nearly) the whole sentence.
        covered = span_mask(inside, len(samples))[sentence.start : sentence.end].mean()
        assert covered > 0.9
    assert all(s.end - s.start <= WINDOW_SAMPLES for s in spans)


def test_plan_keeps_short_speech_in_one_window_with_its_speech(spoken: tuple[np.ndarray, list[Window]]) -> None:
    samples, sentences = spoken
    clip = samples[: sentences[0].end + seconds(3)]  # 2 s of silence, a sentence, 3 s of silence
    [window] = plan_windows(clip)
    # The window keeps CLIP_MARGIN_S of the silence around the sentence, not all of it.
    assert window.start / SAMPLE_RATE == pytest.approx(sentences[0].start / SAMPLE_RATE - CLIP_MARGIN_S, abs=0.3)
    assert window.end / SAMPLE_RATE == pytest.approx(sentences[0].end / SAMPLE_RATE + CLIP_MARGIN_S, abs=0.3)
    [(start, end)] = window.speech  # window seconds
    assert start == pytest.approx(CLIP_MARGIN_S, abs=0.3)
    assert end == pytest.approx((sentences[0].end - window.start) / SAMPLE_RATE, abs=0.3)
    [whole] = plan_windows(clip, use_vad=False)
    assert whole == Window(0, len(clip))


def test_plan_of_a_clip_after_a_long_silence_starts_near_the_speech(spoken: tuple[np.ndarray, list[Window]]) -> None:
    samples, sentences = spoken
    sentence = samples[sentences[0].start : sentences[0].end]
    clip = np.concatenate([np.zeros(seconds(25), dtype=np.float32), sentence])
    [window] = plan_windows(clip)
    assert window.start >= seconds(25) - seconds(CLIP_MARGIN_S) - seconds(0.3)
    assert window.end == len(clip)


def test_plan_of_long_speech_cuts_only_in_silence(spoken: tuple[np.ndarray, list[Window]]) -> None:
    samples, sentences = spoken
    assert len(samples) > WINDOW_SAMPLES
    windows = plan_windows(samples)

    assert len(windows) == 2
    assert all(w.end - w.start <= WINDOW_SAMPLES for w in windows)
    for sentence in sentences:
        # Every sentence lies inside exactly one window: no word is split between windows.
        holders = [w for w in windows if w.start <= sentence.start and sentence.end <= w.end]
        assert len(holders) == 1, sentence
    assert np.max(coverage(windows, len(samples))) == 1


def test_warm_up_loads_the_vad_model() -> None:
    from whisper_triton import vad

    vad._load.cache_clear()
    windows.warm_up()
    assert vad._load.cache_info().currsize == 1


def test_level_gains_bring_quiet_audio_up_but_never_a_loud_word_or_silence() -> None:
    from whisper_triton.vad import frame_count
    from whisper_triton.windows import level_gains

    db = lambda gain: 20 * np.log10(gain)  # noqa: E731
    quiet_talk = nonspeech("white_noise", 40.0, seed=1) * 10 ** (-25 / 20)  # loud frames near -45 dBFS
    gains = level_gains(quiet_talk.astype(np.float32))
    assert len(gains) == frame_count(len(quiet_talk))
    assert 19 < db(gains[0]) < 21 and 19 < db(gains[-1]) < 21  # to about -25 dBFS, block by block
    loud = nonspeech("white_noise", 0.5) * 2  # about -14 dBFS, in 29.5 s of room tone
    word = np.concatenate([nonspeech("room_tone", 20.0), loud, nonspeech("room_tone", 9.0)]).astype(np.float32)
    peak = 20 * np.log10(np.sqrt(np.mean(np.square(loud[: len(loud) // 512 * 512].reshape(-1, 512)), axis=1)).max())
    assert peak + db(level_gains(word)).max() == pytest.approx(-10.0, abs=0.5)  # not the +30 dB the tone asks
    assert (level_gains(np.zeros(seconds(35), dtype=np.float32)) == 1.0).all()
    assert db(level_gains(nonspeech("room_tone", 10.0))).max() == pytest.approx(30.0)  # never more


def _as_planned(samples: np.ndarray, use_vad: bool = True) -> list[list[Window]]:
    return list(windows.planned_windows(samples, use_vad))


def _exactly(plan: list[Window]) -> list[tuple[int, int, tuple[tuple[float, float], ...]]]:
    return [(w.start, w.end, w.speech) for w in plan]


def _long_audio(kind: str) -> np.ndarray:
    """Six minutes of read speech (real, joined with pauses), of a real meeting, or of synthetic speech."""
    from harness.assets import long_recording
    from harness.meetings import meetings
    from harness.speech import long_speech

    if kind == "meeting":
        return np.concatenate([m.samples for m in meetings("tune")])[: seconds(360)]
    recording = long_speech("report", 6.0) if kind == "read" else long_recording(6.0)
    return decode_audio(recording.path.read_bytes()).samples


@pytest.mark.parametrize(("kind", "group_chunks"), [("read", 1), ("meeting", 1), ("synthetic", 1), ("read", 3),
                                                    ("meeting", 32)])
def test_windows_planned_as_vad_goes_are_the_whole_plan(monkeypatch: pytest.MonkeyPatch, kind: str,
                                                        group_chunks: int) -> None:
    """Long real and synthetic speech: the windows sent while VAD runs, then the rest, are exactly
    `plan_windows`' (bounds and speech), and most are sent before VAD is done."""
    monkeypatch.setattr(vad_module, "GROUP_CHUNKS", group_chunks)
    samples = _long_audio(kind)
    whole = plan_windows(samples)
    batches = _as_planned(samples)
    assert _exactly([w for batch in batches for w in batch]) == _exactly(whole)
    assert len(whole) > 8 and len(batches) > 1
    if group_chunks == 1:  # a group every 8 s: each window leaves soon after VAD passed it
        assert len(batches[-1]) <= 2


def test_short_audio_and_fixed_windows_are_planned_in_one_go() -> None:
    clip = decode_audio(jfk_wav().read_bytes()).samples
    assert _as_planned(clip) == [plan_windows(clip)]
    long = np.tile(clip, 8)
    assert [_exactly(b) for b in _as_planned(long, use_vad=False)] == [_exactly(plan_windows(long, use_vad=False))]
    assert _as_planned(np.zeros(0, dtype=np.float32)) == []
    assert _as_planned(np.zeros(seconds(95), dtype=np.float32)) == []  # silence: nothing to decode


def test_stopping_the_plan_early_stops_vad(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.assets import long_recording

    monkeypatch.setattr(vad_module, "GROUP_CHUNKS", 1)
    samples = decode_audio(long_recording(6.0).path.read_bytes()).samples
    groups: list[int] = []
    run = vad_module._LstmSession.run
    monkeypatch.setattr(vad_module._LstmSession, "run", lambda self, x: (groups.append(1), run(self, x))[1])
    plan = windows.planned_windows(samples)
    first = next(plan)
    plan.close()
    assert first and len(groups) < frame_count(len(samples)) // vad_module.CHUNK_FRAMES // 2
