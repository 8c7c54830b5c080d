"""OpenAI's Realtime transcription protocol on the wire: session objects (the GA shape and the older
`transcription_session` one), client events read leniently, server events written as OpenAI writes them.

A session here is always a transcription session with a model: OpenAI's starts with `transcription: null`
(no transcript until the client names a model); ours starts with the server's default model, so a client
that only streams audio gets transcripts.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from whisper_triton.errors import InvalidRequestError
from whisper_triton.live_contract import OPENAI_NAMES, LiveConfig, TurnDetection

MAX_APPEND_BYTES = 15 * 1024 * 1024  # OpenAI's limit for one append's audio
CLIENT_EVENTS = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear", "session.close")
FORMAT_NAMES = {"pcm16": "audio/pcm", "pcmu": "audio/pcmu", "pcma": "audio/pcma"}
BETA_FORMATS = {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}
DEFAULT_TURNS = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
LOGPROBS = "item.input_audio_transcription.logprobs"  # the `include` that asks for log-probabilities
REALTIME_ALIASES = ("gpt-live-transcribe", "gpt-realtime-whisper", "gpt-transcribe")


def event_id() -> str:
    return "event_" + secrets.token_hex(10)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class SessionState:
    """A session's settings as the client sees them (OpenAI's fields) and as the live model takes them."""

    id: str = field(default_factory=lambda: new_id("sess"))
    format: str = "pcm16"  # pcm16 | pcmu | pcma
    model: str = ""  # as the client named it (an alias stays an alias); "" = the default
    served_model: str = ""  # the served model it names
    language: str | None = None
    prompt: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TURNS))
    noise_reduction: dict[str, Any] | None = None
    include: list[str] | None = None
    expires_at: int = field(default_factory=lambda: int(time.time()) + 3600)

    def live_config(self) -> LiveConfig:
        turns = None
        if self.turn_detection is not None:
            known = {k: v for k, v in self.turn_detection.items()
                     if k in TurnDetection.__struct_fields__}
            turns = TurnDetection(**known)
        return LiveConfig(format=self.format, rate=24_000 if self.format == "pcm16" else None,
                          model=self.served_model, language=self.language, prompt=self.prompt, turn_detection=turns,
                          logprobs=LOGPROBS in (self.include or ()))

    def ga(self) -> dict[str, Any]:
        """The session object of `session.created` / `session.updated`."""
        fmt: dict[str, Any] = {"type": FORMAT_NAMES[self.format]}
        if self.format == "pcm16":
            fmt["rate"] = 24_000
        return {"type": "transcription", "object": "realtime.transcription_session", "id": self.id,
                "expires_at": self.expires_at,
                "audio": {"input": {"format": fmt, "transcription": self._transcription(),
                                    "noise_reduction": self.noise_reduction, "turn_detection": self.turn_detection}},
                "include": self.include}

    def beta(self) -> dict[str, Any]:
        """The older `transcription_session` object."""
        return {"id": self.id, "object": "realtime.transcription_session", "expires_at": self.expires_at,
                "input_audio_format": BETA_FORMATS[self.format],
                "input_audio_transcription": self._transcription(), "turn_detection": self.turn_detection,
                "input_audio_noise_reduction": self.noise_reduction, "include": self.include,
                "modalities": ["text"]}

    def _transcription(self) -> dict[str, Any]:
        return {"model": self.model or self.served_model, "language": self.language, "prompt": self.prompt}


def updated(state: SessionState, session: Any, beta: bool, resolve: Any) -> SessionState:
    """The state after a `session.update` (GA) or `transcription_session.update` (beta): only the fields
    present change, `null` turns a feature off. InvalidRequestError (param = the field's path) for a bad
    value; the state is then unchanged. `resolve(model)` gives the served model or None."""
    if not isinstance(session, dict):
        raise InvalidRequestError("Invalid 'session': expected an object.", param="session", code="invalid_type")
    if beta:
        fmt = session.get("input_audio_format")
        audio = {"format": None if fmt is None else {"type": fmt}} if "input_audio_format" in session else {}
        for ours, theirs in (("transcription", "input_audio_transcription"), ("turn_detection", "turn_detection"),
                             ("noise_reduction", "input_audio_noise_reduction")):
            if theirs in session:
                audio[ours] = session[theirs]
        prefix = "session"
    else:
        if session.get("type", "transcription") != "transcription":
            raise InvalidRequestError("Only transcription sessions are served here: session.type must be "
                                      "'transcription'.", param="session.type", code="invalid_value")
        audio = _object(session.get("audio", {}), "session.audio").get("input", {})
        audio = _object(audio, "session.audio.input")
        prefix = "session.audio.input"
    changes: dict[str, Any] = {}
    if audio.get("format") is not None:
        changes["format"] = _format(_object(audio["format"], f"{prefix}.format"), f"{prefix}.format")
    if "transcription" in audio:
        changes.update(_transcription(audio["transcription"], f"{prefix}.transcription", resolve))
    if "turn_detection" in audio:
        changes["turn_detection"] = _turns(audio["turn_detection"], f"{prefix}.turn_detection")
    if "noise_reduction" in audio:
        changes["noise_reduction"] = audio["noise_reduction"]  # accepted, not applied (documented)
    if "include" in session:
        include = session["include"]
        if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
            raise InvalidRequestError("Invalid 'include': expected a list of strings.", param="session.include",
                                      code="invalid_type")
        changes["include"] = include
    return replace(state, **changes)


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"Invalid '{param}': expected an object.", param=param, code="invalid_type")
    return value


def _format(value: dict[str, Any], param: str) -> str:
    name = value.get("type")
    encoding = OPENAI_NAMES.get(name) if isinstance(name, str) else None
    if encoding is None:
        raise InvalidRequestError(f"Invalid '{param}.type': use audio/pcm, audio/pcmu or audio/pcma.",
                                  param=f"{param}.type", code="invalid_value")
    rate = value.get("rate")
    if encoding == "pcm16" and rate is not None and rate != 24_000:
        raise InvalidRequestError(f"Invalid '{param}.rate': expected 24000 (16-bit PCM at 24 kHz).",
                                  param=f"{param}.rate", code="invalid_value")
    return encoding


def _transcription(value: Any, param: str, resolve: Any) -> dict[str, Any]:
    if value is None:  # OpenAI: transcription off; here the session keeps transcribing with the default model
        return {"model": "", "served_model": resolve("")}
    value = _object(value, param)
    changes: dict[str, Any] = {}
    if "model" in value:
        model = value["model"] or ""
        served = resolve(model) if isinstance(model, str) else None
        if served is None:
            raise InvalidRequestError(f"The model `{model}` does not exist or you do not have access to it.",
                                      param=f"{param}.model", code="model_not_found")
        changes.update(model=model, served_model=served)
    for name in ("language", "prompt"):
        if name in value:
            if value[name] is not None and not isinstance(value[name], str):
                raise InvalidRequestError(f"Invalid '{param}.{name}': expected a string.", param=f"{param}.{name}",
                                          code="invalid_type")
            changes[name] = value[name] or None
    return changes


def _turns(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _object(value, param)
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise InvalidRequestError(f"Invalid '{param}.type': server_vad, semantic_vad or null.",
                                  param=f"{param}.type", code="invalid_value")
    merged = {**DEFAULT_TURNS, **value} if kind == "server_vad" else {"type": kind, "eagerness": "auto", **value}
    try:
        TurnDetection(**{k: v for k, v in merged.items() if k in TurnDetection.__struct_fields__}).check()
    except (InvalidRequestError, TypeError, KeyError) as exc:
        raise InvalidRequestError(f"Invalid '{param}': {exc}", param=param, code="invalid_value") from exc
    return merged


def audio_bytes(event: dict[str, Any]) -> bytes:
    """The audio of an `input_audio_buffer.append` (base64, strictly)."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise InvalidRequestError("Invalid 'audio': expected base64-encoded audio bytes.", param="audio",
                                  code="invalid_value")
    if len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
        raise InvalidRequestError(f"Invalid 'audio': at most {MAX_APPEND_BYTES} bytes per append.", param="audio",
                                  code="invalid_value")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("Invalid 'audio'. Expected base64-encoded audio bytes (mono PCM16 at 24kHz).",
                                  param="audio", code="invalid_value") from exc


def error_event(error: InvalidRequestError | Exception, client_event: str | None = None,
                kind: str = "invalid_request_error") -> dict[str, Any]:
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(error)
    return {"type": "error", "event_id": event_id(),
            "error": {"type": kind, "code": code, "message": message, "param": getattr(error, "param", None),
                      "event_id": client_event}}


def item(item_id: str) -> dict[str, Any]:
    """A committed turn as a conversation item."""
    return {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed", "role": "user",
            "content": [{"type": "input_audio", "transcript": None}]}
