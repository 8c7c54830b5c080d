"""Domain errors below, HTTP only at the edge: how each kind of domain error reaches a client."""

from __future__ import annotations

import pytest

from frontend.database import StoreError
from frontend.errors import api_error
from frontend.transcription import Admission, unknown_model
from whisper_triton.errors import (
    AudioTooShortError,
    ConflictError,
    EngineError,
    InvalidRequestError,
    NotFoundError,
    ServiceError,
    UnavailableError,
)


@pytest.mark.parametrize(("error", "status", "kind", "code"), [
    (InvalidRequestError("Bad.", param="language"), 400, "invalid_request_error", "invalid_value"),
    (AudioTooShortError("Short."), 400, "invalid_request_error", "audio_too_short"),
    (InvalidRequestError("Off.", param="diarize", code="unsupported_value"), 400, "invalid_request_error",
     "unsupported_value"),
    (unknown_model("nope"), 404, "invalid_request_error", "model_not_found"),
    (NotFoundError("No task.", param="task_id", code="task_not_found"), 404, "invalid_request_error", "task_not_found"),
    (ConflictError("Taken.", param="name", code="speaker_exists"), 409, "invalid_request_error", "speaker_exists"),
    (UnavailableError("Restarting."), 503, "server_error", "server_overloaded"),
    (StoreError("database is locked"), 503, "server_error", "database_unavailable"),
    (EngineError("Boom."), 500, "server_error", "engine_error"),
    (ServiceError("Anything else."), 500, "server_error", "internal_error"),
])
def test_each_domain_error_has_one_status(error: ServiceError, status: int, kind: str, code: str) -> None:
    answer = api_error(error, retry_after=7)
    assert (answer.status, answer.type, answer.code) == (status, kind, code)
    assert answer.retry_after == (7 if status == 503 else None)
    assert answer.param == (error.param if status < 500 else None)
    if status == 500:
        assert answer.message == "The server failed to transcribe the audio."  # no internals
    if isinstance(error, StoreError):
        assert "locked" not in answer.message  # the database's own words go to the log only


async def test_admission_is_bounded_and_a_slot_is_given_back_once() -> None:
    admission = Admission(limit=1)
    slot = await admission.admit()
    with pytest.raises(UnavailableError):
        await admission.admit()
    slot.release()
    slot.release()
    assert admission.in_flight == 0
    await admission.admit()
    assert admission.in_flight == 1
