"""One bad window fails alone: the other requests' windows of its batch are decoded again one by one."""

from __future__ import annotations

import msgspec
import pytest

from tests.unit.test_decoding import FakeEngine, english, job, speech  # noqa: F401 (english is a fixture)
from whisper_triton import contract
from whisper_triton.decoding import WindowResult, decode_each
from whisper_triton.text import WhisperTokenizer


def test_a_window_the_engine_fails_on_fails_alone(english: WhisperTokenizer) -> None:  # noqa: F811
    engine = FakeEngine({1: {0.0: speech(english, " one")}, 3: {0.0: speech(english, " three")}})
    outcomes = decode_each(engine, english, [job(1), job(2), job(3)])  # the engine fails on item 2
    assert isinstance(outcomes[1], KeyError)
    assert [o.segments[0].text for o in outcomes if isinstance(o, WindowResult)] == [" one", " three"]
    assert [c.items for c in engine.called("generate")] == [[1, 2, 3], [1], [2], [3]]


def test_a_batch_that_works_is_decoded_once(english: WhisperTokenizer) -> None:  # noqa: F811
    engine = FakeEngine({1: {0.0: speech(english, " one")}, 2: {0.0: speech(english, " two")}})
    outcomes = decode_each(engine, english, [job(1), job(2)])
    assert all(isinstance(o, WindowResult) for o in outcomes)
    assert len(engine.called("generate")) == 1
    assert decode_each(engine, english, []) == []


@pytest.mark.parametrize("options", [{"temperatures": []}, {"temperatures": [0.0, 1.5]}, {"beam_size": 0}])
def test_options_no_window_can_be_decoded_with_are_refused(options: dict[str, object]) -> None:
    # Sent straight to the engine over gRPC, they used to fail every window batched with them.
    with pytest.raises(ValueError):
        contract.decode_options(msgspec.json.encode(options))
    assert contract.decode_options(b'{"temperatures": [0.2, 0.4], "beam_size": 5}').beam_size == 5
