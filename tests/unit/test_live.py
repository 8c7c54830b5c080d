"""Live audio: VAD as the audio arrives (the file VAD's probabilities), and OpenAI's server_vad turns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.assets import jfk_wav
from harness.nonspeech import nonspeech
from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.errors import InvalidRequestError
from whisper_triton.live import (
    FRAME_MS,
    IdleTimeout,
    LiveVad,
    PauseEnded,
    PauseStarted,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnOptions,
)
from whisper_triton.live_audio import LiveDecoder, LiveFormat, alaw_to_linear, ulaw_to_linear
from whisper_triton.vad import CHUNK_FRAMES, FRAME_SAMPLES, SileroVad


@pytest.fixture(scope="module")
def talk() -> np.ndarray:
    """JFK, 12 s of room tone, JFK again: 34 s, four VAD chunks."""
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    return np.concatenate([jfk, nonspeech("room_tone", 12.0, seed=3), jfk]).astype(np.float32)


def pushed(vad: LiveVad, samples: np.ndarray, sizes: list[int]) -> np.ndarray:
    probs, at, turn = [], 0, 0
    while at < len(samples):
        size = sizes[turn % len(sizes)]
        probs.append(vad.push(samples[at : at + size]))
        at, turn = at + size, turn + 1
    return np.concatenate(probs)


@pytest.mark.parametrize("sizes", [[480], [4800, 100, 1], [FRAME_SAMPLES * CHUNK_FRAMES + 7], [16_000 * 60]])
def test_live_probabilities_are_the_file_vads(talk: np.ndarray, sizes: list[int]) -> None:
    """Pushed in any pieces (20 ms, odd sizes, more than a chunk, all at once), each whole frame gets the
    probability the file VAD gives it (the file's last frame differs: the file is padded at its end)."""
    whole = SileroVad.load().probabilities(talk)
    live = pushed(LiveVad(level=False), talk, sizes)
    assert len(live) == len(talk) // FRAME_SAMPLES > 3 * CHUNK_FRAMES
    assert np.abs(live[:-1] - whole[: len(live) - 1]).max() < 1e-4


def test_quiet_speech_is_brought_to_speaking_level(talk: np.ndarray) -> None:
    quiet = talk * 10 ** (-55 / 20)
    plain = pushed(LiveVad(level=False), quiet, [3200])
    levelled = pushed(LiveVad(), quiet, [3200])
    loud = pushed(LiveVad(level=False), talk, [3200])
    speech = loud > 0.5
    assert plain[speech].mean() < 0.5 and levelled[speech].mean() > 0.8, (plain[speech].mean(), levelled[speech].mean())
    assert (levelled[~speech] > 0.5).mean() < 0.1  # the room tone stays non-speech


def frames_of(*runs: tuple[float, int]) -> np.ndarray:
    """Probabilities: `(level, milliseconds)` runs, one value per frame."""
    return np.concatenate([np.full(ms // FRAME_MS, level, np.float32) for level, ms in runs])


def test_a_turn_starts_with_its_prefix_and_stops_after_the_silence() -> None:
    detector = TurnDetector(TurnOptions(silence_duration_ms=500, prefix_padding_ms=300))
    events = detector.push(frames_of((0.0, 2048), (0.9, 1024), (0.4, 320), (0.1, 640), (0.9, 320), (0.0, 96)))
    # speech at 2048 ms; a dip to 0.4 (between the thresholds) does not start the silence; 0.1 from 3392 ms;
    # speech again at 4032 ms, its prefix not before the last turn's end
    assert events == [SpeechStarted(2048 - 300), SpeechStopped(3392 + 512), SpeechStarted(3904)]
    assert detector.speaking and detector.push(frames_of((0.0, 352))) == []  # silent from 4352 ms: 448 ms
    assert detector.push(frames_of((0.0, 64))) == [SpeechStopped(4352 + 512)]


def test_a_short_pause_does_not_end_a_turn_and_a_long_turn_is_cut_at_one_window() -> None:
    detector = TurnDetector(TurnOptions(silence_duration_ms=500))
    events = detector.push(frames_of((0.9, 4000), (0.0, 448), (0.9, 4000)))
    assert events == [SpeechStarted(0)]
    assert detector.speaking
    events = detector.push(frames_of((0.9, 40_000)))
    assert events[0] == SpeechStopped(30_016) and events[1] == SpeechStarted(30_016) and len(events) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1, width=32), st.integers(1, 3000)), min_size=1, max_size=40),
       st.sampled_from([200, 500, 1000]), st.sampled_from([0, 300]))
def test_turns_alternate_and_never_overlap(runs: list[tuple[float, int]], silence: int, prefix: int) -> None:
    detector = TurnDetector(TurnOptions(silence_duration_ms=silence, prefix_padding_ms=prefix))
    probs = np.concatenate([np.full(max(1, ms // FRAME_MS), p, np.float32) for p, ms in runs])
    events = detector.push(probs)
    assert all(isinstance(e, SpeechStarted if i % 2 == 0 else SpeechStopped) for i, e in enumerate(events))
    times = [e.audio_start_ms if isinstance(e, SpeechStarted) else e.audio_end_ms for e in events]
    assert times == sorted(times) and all(0 <= t <= len(probs) * FRAME_MS for t in times)
    if detector.speaking:
        stopped = detector.stop()
        assert stopped is not None and stopped.audio_end_ms == len(probs) * FRAME_MS
    assert detector.stop() is None


def test_turns_in_real_speech(talk: np.ndarray) -> None:
    detector, vad = TurnDetector(), LiveVad()
    events = [e for probs in (vad.push(talk[i : i + 1600]) for i in range(0, len(talk), 1600))
              for e in detector.push(probs)]
    starts = [e.audio_start_ms for e in events if isinstance(e, SpeechStarted)]
    stops = [e.audio_end_ms for e in events if isinstance(e, SpeechStopped)]
    jfk_ms = 11_000
    # JFK's pauses may split him into a few turns, but none starts in the room tone between the two.
    assert starts and all(s < jfk_ms or s > jfk_ms + 11_500 for s in starts)
    assert any(s > jfk_ms + 11_500 for s in starts) and stops and stops[0] > 1_000
    assert SAMPLE_RATE == 16_000


# --------------------------------------------------------------------------------------------------
# Live audio formats


def test_g711_tables_decode_as_the_standard_does() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the reference decoder (removed from Python 3.13; here for the test only)

    every = bytes(range(256))
    assert ulaw_to_linear(every).tolist() == list(np.frombuffer(audioop.ulaw2lin(every, 2), dtype="<i2"))
    assert alaw_to_linear(every).tolist() == list(np.frombuffer(audioop.alaw2lin(every, 2), dtype="<i2"))


def tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    return (np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate) * 12_000).astype("<i2")


@pytest.mark.parametrize(("name", "rate"), [("audio/pcm", 24_000), ("pcm16", 16_000), ("audio/pcm", 48_000)])
def test_pcm_at_any_rate_becomes_16_khz_whatever_the_pieces(name: str, rate: int) -> None:
    data = tone(rate, 2.0).tobytes()
    decoder = LiveDecoder(LiveFormat.of(name, rate))
    pieces = [data[i : i + 4801] for i in range(0, len(data), 4801)]  # odd sizes split samples in two
    out = np.concatenate([decoder.push(p) for p in pieces] + [decoder.flush()])
    assert abs(len(out) - 2 * SAMPLE_RATE) <= 32 and decoder.samples_in == 2 * rate
    expected = tone(SAMPLE_RATE, 2.0).astype(np.float32) / 32768
    lag = int(np.argmax(np.correlate(out[8000:8400], expected[8000 - 40 : 8440], "valid"))) - 40
    assert abs(lag) <= 40 and np.abs(out[8000:24000] - expected[8000 + lag : 24000 + lag]).max() < 0.02


def test_g711_becomes_16_khz() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    linear = tone(8000, 1.0).tobytes()
    for name, encode in (("audio/pcmu", audioop.lin2ulaw), ("g711_alaw", audioop.lin2alaw)):
        decoder = LiveDecoder(LiveFormat.of(name))
        assert decoder.format.rate == 8000
        out = np.concatenate([decoder.push(encode(linear, 2)), decoder.flush()])
        assert abs(len(out) - SAMPLE_RATE) <= 32 and 0.3 < np.abs(out).max() < 0.4


@pytest.mark.parametrize(("name", "rate"), [("audio/mp3", None), ("opus", None), ("audio/pcm", 4000),
                                            ("audio/pcm", 96_000)])
def test_unknown_formats_and_rates_are_refused(name: str, rate: int | None) -> None:
    with pytest.raises(InvalidRequestError):
        LiveFormat.of(name, rate)


def test_a_pause_that_may_end_the_turn_is_announced_and_taken_back_when_speech_goes_on() -> None:
    detector = TurnDetector(TurnOptions(silence_duration_ms=500, speculate_ms=200))
    events = detector.push(frames_of((0.9, 1024), (0.0, 320), (0.9, 320), (0.0, 640)))
    # silent from 1024 ms: a pause at 1024 + 224 (the frame reaching 200 ms); speech again at 1344 ms;
    # silent from 1664 ms: a pause at 1664 + 224, then the stop at 1664 + 512
    assert events == [SpeechStarted(0), PauseStarted(1248), PauseEnded(), PauseStarted(1888), SpeechStopped(2176)]
    assert TurnDetector(TurnOptions(silence_duration_ms=500)).push(frames_of((0.9, 1024), (0.0, 640))) == [
        SpeechStarted(0), SpeechStopped(1536)]  # speculate_ms 0: no pauses announced


def test_an_idle_timeout_comes_after_that_much_silence_and_again_after_each() -> None:
    detector = TurnDetector(TurnOptions(silence_duration_ms=500, prefix_padding_ms=300, idle_timeout_ms=2000))
    # 1984 ms of silence: not yet; the 63rd frame makes 2016 ms
    assert detector.push(frames_of((0.0, 1984))) == []
    assert detector.push(frames_of((0.0, 32))) == [IdleTimeout(0, 2016)]
    # a turn: its prefix does not reach back before the timeout's end; the idle time restarts at its end
    events = detector.push(frames_of((0.0, 1504), (0.9, 1024), (0.0, 512)))
    assert events == [SpeechStarted(3520 - 300), SpeechStopped(4544 + 512)]
    assert detector.push(frames_of((0.0, 1984))) == []
    assert detector.push(frames_of((0.0, 32))) == [IdleTimeout(5056, 7072)]
    # a commit (stop) with nobody speaking restarts the idle time too
    detector.push(frames_of((0.0, 1024)))
    assert detector.stop() is None
    assert detector.push(frames_of((0.0, 1984))) == [] and detector.push(frames_of((0.0, 32))) != []


def test_no_idle_timeout_unless_asked_or_while_speaking() -> None:
    assert TurnDetector(TurnOptions()).push(frames_of((0.0, 60_000))) == []
    speaking = TurnDetector(TurnOptions(idle_timeout_ms=1000, max_turn_ms=60_000))
    assert speaking.push(frames_of((0.9, 5000))) == [SpeechStarted(0)]
