"""The loops benchmark's arithmetic and README block (its runs take minutes: `python -m bench.loops`)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.loops import Outcome, readme_block, silence_table, summarise, table

PROFILE = {"windows": 2, "looping_passes": 1, "loops": 1, "dropped_in_silence": 0, "dropped_away_from_speech": 1}


def test_loops_left_wer_and_counts() -> None:
    outcomes = [
        Outcome("talk", "speech", "we need to find a new one", " We need to find a new one.", 0, 0, PROFILE),
        Outcome("noisy", "speech", "press one", " Press 1. Press 1. Press 1. Press 1. Press 1.", 1, 8, PROFILE),
        Outcome("music-30s, VAD off", "nonspeech", "", " Whiff, whiff, whiff, whiff.", 0, 0, {"windows": 1}),
    ]
    summary = summarise("tiny.en, loop check off", outcomes, 3.0)
    assert (summary["windows"], summary["looping_passes"], summary["loops_cut"]) == (5, 2, 2)
    assert (summary["outputs_with_loops"], summary["outputs"], summary["looped_words"]) == (1, 3, 8)
    assert summary["speech_words"] == 9 and summary["speech_wer"] == 0.8889  # 8 words inserted
    assert summary["nonspeech_words"] == 4 and summary["dropped_away_from_speech"] == 2
    assert "| tiny.en, loop check off | 5 | 2 | 2 | 1 / 3 (8) | - | 88.89 % (9 words) | 4 | 3 s |" in table([summary])
    assert "| tiny.en, loop check off | 0 | 2 | 88.89 % (9 words) | 0 / 2 | 4 | 3 s |" in silence_table([summary])


def test_readme_block_of_both_kinds_of_run(tmp_path: Path) -> None:
    summary = summarise("base, loop check on", [Outcome("a", "speech", "hi", " Hi.", 0, 0, PROFILE)], 1.0)
    meta = {"command": "python -m bench.loops", "host": "vm", "threads": 2, "date": "2026-12-05T10:00:00"}
    loops, silence = tmp_path / "loops.json", tmp_path / "silence.json"
    loops.write_text(json.dumps({"meta": {**meta, "kind": "loops"}, "results": [summary]}))
    silence.write_text(json.dumps({"meta": {**meta, "kind": "silence"}, "results": [summary]}))
    block = readme_block([(json.loads(p.read_text()), p) for p in (loops, silence)])
    assert "JSON: `bench/results/loops.json`" in block and "JSON: `bench/results/silence.json`" in block
    assert "Outputs with a loop left:\nnone" in block and "dropped as invented in silence" in block


def test_outputs_the_check_changed() -> None:
    from bench.loops import changed

    on = summarise("on", [Outcome("a", "speech", "hi", " Hi.", 0, 0, PROFILE),
                          Outcome("b", "speech", "yes", " Yes.", 0, 0, PROFILE)], 1.0)
    off = summarise("off", [Outcome("a", "speech", "hi", " Hi.", 0, 0, PROFILE),
                            Outcome("b", "speech", "yes", " Yes. Yes. Yes. Yes. Yes. Yes.", 1, 5, PROFILE)], 1.0)
    on["changed"] = changed(on, off)
    assert on["changed"] == [{"name": "b", "on": " Yes.", "off": " Yes. Yes. Yes. Yes. Yes. Yes."}]
    printed = table([on, off])
    assert "| on | 4 | 2 | 2 | 0 / 2 (0) | 1 |" in printed and "| off | 4 | 2 | 2 | 1 / 2 (5) | - |" in printed
