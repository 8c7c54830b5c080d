"""The hallucination benchmark's arithmetic (its runs need a server: `make bench-accuracy`)."""

from __future__ import annotations

from bench.hallucination import Outcome, summarise, table


def test_words_per_minute_of_non_speech_and_wer_on_speech() -> None:
    outcomes = [
        Outcome("silence-30s", "silence", 30.0, "", "Thank you."),
        Outcome("music-30s", "music", 30.0, "", ""),
        Outcome("hum-60s", "hum", 60.0, "", "you you you"),
        Outcome("asterisk/a", "speech", 2.0, "press one to record", "press 1 to record"),
        Outcome("asterisk/b", "speech", 1.0, "goodbye", ""),
        Outcome("music-60s", "music", 60.0, "", "2.0-2.0-2.0-2.0-2.0-2.0-2.0-2.0"),
    ]
    summary = summarise("ours", outcomes, 12.0)
    assert summary["invented_words"] == 13 and summary["nonspeech_minutes"] == 3.0
    assert summary["words_per_minute"] == 4.33 and summary["clips_with_text"] == 3
    assert summary["by_kind"]["silence"] == 2 and summary["by_kind"]["hum"] == 3 and summary["by_kind"]["music"] == 8
    assert summary["speech_wer"] == 0.2 and summary["speech_words"] == 5 and summary["speech_empty"] == 1
    assert summary["looping"] == 1  # "you you you" is speech-like; eight "2.0" in a row loop
    printed = table([summary])
    assert "| ours | 4.33 (13 words in 3.0 min) | 3 / 4 | 20.00 % (5 words) | 1 / 2 | 1 |" in printed
