"""bench.packing: turns made as the live model makes them, windows counted, WER per turn and joined."""

from __future__ import annotations

import numpy as np

from bench.packing import LEAD_S, PAUSE_S, run, turns
from harness.speech import speech_clips
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.text import WhisperTokenizer


def test_turns_are_padded_as_server_vad_cuts_them_and_packing_counts_fewer_windows() -> None:
    clips = [c for c in speech_clips("report") if 2.0 <= c.duration <= 4.0][:3]
    made = turns(clips)
    assert [len(w.payload) for w in made] == [round((LEAD_S + c.duration + PAUSE_S) * 16_000) for c in clips]
    assert all(w.options.live and w.options.language == "en" for w in made)
    assert np.array_equal(made[0].payload[round(LEAD_S * 16_000):][: len(clips[0].samples)], clips[0].samples)
    path = resolve_model("tiny.en").path
    info = read_model_info(path)
    tokenizer = WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)
    engine = CTranslate2Engine(path, intra_threads=2)
    alone, packed = (run(engine, tokenizer, clips, 0, packed) for packed in (False, True))
    assert (alone.windows, packed.windows) == (3, 1) and alone.turns == packed.turns == 3
    assert packed.wer_per_turn <= 0.3 and packed.wer_joined <= 0.3
