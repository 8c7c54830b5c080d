"""bench.language: guesses counted per language, and sessions run through the live model's pinning rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.language import measure
from bench.saved import save_run


class Guessing:
    """Answers each turn's detection from two scripts of (language, probability): one for the turn's 30 s
    window (3000 frames), one for its own audio (fewer)."""

    n_mels = 80

    def __init__(self, window: list[tuple[str, float]], own: list[tuple[str, float]]) -> None:
        self.window, self.own = list(window), list(own)

    def encode(self, features: np.ndarray) -> Any:
        return features

    def detect_language(self, encoded: Any) -> list[list[tuple[str, float]]]:
        return [[(self.window if encoded.shape[-1] == 3000 else self.own).pop(0)]]


def test_guesses_and_sessions_are_counted() -> None:
    three_s = np.zeros(3 * 16_000, np.float32)
    one_s = np.zeros(16_000, np.float32)
    # session 1: one sure wrong guess, then two sure right ones; session 2: never two sure turns that agree
    window = [("es", 0.97), ("it", 0.9), ("it", 0.85), ("it", 0.5), ("it", 0.99), ("es", 0.95)]
    # on their own audio: the first turn unsure (the window's guess is served), the third surely wrong
    own = [("es", 0.6), ("it", 0.95), ("es", 0.9), ("it", 0.8), ("it", 0.99), ("it", 0.99)]
    row = measure(Guessing(window, own), "it", [three_s, three_s, three_s, three_s, one_s, three_s],  # type: ignore[arg-type]
                  session_turns=3)
    assert (row.clips, row.right, row.lowest_right) == (6, 4, 0.5)
    assert [(g, p) for g, p, _ in row.wrong] == [("es", 0.97), ("es", 0.95)]
    assert (row.sure, row.sure_wrong) == (4, 2)  # the 1.3 s turn and the unsure one do not count
    assert (row.own_right, row.own_taken, row.own_taken_wrong) == (4, 5, 1)
    assert row.served_right == 4  # served: es (the window's), it, es, it, it, it
    # session 1 (es 0.97, it 0.95, es 0.9) never has two sure turns agree; session 2 pins it (0.8, then 0.99 on
    # a turn too short to count, then 0.99)
    assert (row.sessions, row.pinned_right, row.pinned_wrong) == (2, 1, 0)


def test_turns_sure_both_ways_are_counted_with_their_wrong_ones() -> None:
    three_s, one_s = np.zeros(3 * 16_000, np.float32), np.zeros(16_000, np.float32)
    window = [("es", 0.97), ("it", 0.9), ("it", 0.85), ("it", 0.99), ("it", 0.6)]
    own = [("es", 0.9), ("it", 0.95), ("es", 0.9), ("it", 0.99), ("it", 0.99)]
    row = measure(Guessing(window, own), "it", [three_s, three_s, three_s, one_s, three_s],  # type: ignore[arg-type]
                  session_turns=5)
    # agreeing and sure: the first (wrong) and the second; not the third (they differ), the fourth (too short)
    # nor the fifth (the window unsure)
    assert (row.agree, row.agree_wrong) == (2, 1)


def test_a_run_is_saved_with_the_machine_and_command(tmp_path: Path) -> None:
    path = save_run("language", {"rows": [{"language": "it"}]}, tmp_path / "run.json", model="base")
    saved = json.loads(path.read_text())
    assert saved["rows"] == [{"language": "it"}]
    assert saved["meta"]["model"] == "base" and saved["meta"]["command"].startswith("python -m bench.language")
    assert saved["meta"]["host"] and saved["meta"]["cores"] >= 1
