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
    ]
    summary = summarise("ours", outcomes, 12.0)
    assert summary["invented_words"] == 5 and summary["nonspeech_minutes"] == 2.0
    assert summary["words_per_minute"] == 2.5 and summary["clips_with_text"] == 2
    assert summary["by_kind"]["silence"] == 2 and summary["by_kind"]["hum"] == 3 and summary["by_kind"]["music"] == 0
    assert summary["speech_wer"] == 0.2 and summary["speech_words"] == 5 and summary["speech_empty"] == 1
    printed = table([summary])
    assert "| ours | 2.50 (5 words in 2.0 min) | 2 / 3 | 20.00 % (5 words) | 1 / 2 |" in printed
