"""Names and encodings of the Triton models' tensors, shared by both sides of each call.

Entry model `whisper` (decoupled; call it with gRPC streaming):
  inputs  AUDIO            BYTES [1]  the file: any container FFmpeg reads
          MODEL            BYTES [1]  optional: model id (WHISPER_MODELS); default: the first
          TASK             BYTES [1]  optional: transcribe (default) | translate | diarize | embed
          LANGUAGE         BYTES [1]  optional: ISO-639-1 or BCP-47; empty = detect
          PROMPT           BYTES [1]  optional: initial prompt (vocabulary, style)
          TEMPERATURE      FP32  [1]  optional: 0 (default) = automatic fallback
          WORD_TIMESTAMPS  BOOL  [1]  optional: default false
          TIMESTAMPS       BOOL  [1]  optional, ignored: every window is decoded with timestamps (kept so that
                                      older clients still work)
          VAD              BOOL  [1]  optional: default true (audio without speech gives no text, segments
                                      away from speech are dropped); false decodes every sample, in
                                      fixed 30 s windows
          STREAM           BOOL  [1]  optional: default false; true sends a response per window
          PROFILE          BOOL  [1]  optional: default false; true adds `profile` (seconds per stage) to `done`
          TRANSCRIPT       BYTES [1]  optional: JSON segments [{start, end, text}] to align, not transcribe
          DIARIZE          BOOL  [1]  optional: speakers on segments and words (needs the diarization model)
          NUM_SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS  INT32 [1]  optional: speaker count hints
          KNOWN_SPEAKER_NAMES       BYTES [-1]     optional: names, one per reference clip, then one per
                                                   embedding row; matching clusters carry the name
          KNOWN_SPEAKER_REFERENCES  BYTES [-1]     optional: audio clips (any container) of one speaker each
          KNOWN_SPEAKER_EMBEDDINGS  FP32  [-1, -1] optional: voices from TASK=embed (e.g. stored ones)
  output  EVENT            BYTES [1]  one JSON event per response (see README)
  TASK=embed returns one `done` event with the speaker embedding of AUDIO (a clip of one voice).

Diarization model `diarization`:
  inputs  WAVEFORM                  FP32  [-1]     16 kHz mono
          NUM_SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS  INT32 [1]  optional
          KNOWN_SPEAKER_NAMES       BYTES [-1]     optional, one per embedding row
          KNOWN_SPEAKER_EMBEDDINGS  FP32  [-1, -1] optional
          EMBED                     BOOL  [1]      optional: true = embed WAVEFORM (one voice), no turns
  outputs TURNS                     BYTES [1]      JSON [{start, end, speaker}] (empty when embedding)
          EMBEDDING                 FP32  [-1]     the voice of WAVEFORM when EMBED (else empty)
          EMBEDDING_MODEL           BYTES [1]      names the embedding space (vectors of two models differ)

Engine models `whisper_engine__<model id>`, one per model (decoupled; in-flight batching of the windows of
all requests; one response per window, the last with the FINAL flag):
  inputs  SAMPLES     FP32  [-1]  16 kHz mono audio of one or more windows, one after another, each at most
                                  30 s (log-mel is computed here, on the engine's side)
          LENGTHS     INT32 [-1]  optional: the samples of each window (default: one window, all of SAMPLES)
          OPTIONS     BYTES [-1]  JSON `DecodeOptions`, one per window or one for all (`request`, `window`,
                                  `speech` as the entry model sends them)
          CANCEL      BYTES [1]   instead of the above: a request id whose queued windows are dropped
  output  RESULT      BYTES [1]   JSON `WindowResult` (its `window` says which), or {"error": message,
                                  "window": index} for a window that failed or was cancelled;
                                  for CANCEL: {"cancelled": <windows dropped>}
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # the frontend imports this module: it needs no tokenizer or engine code
    from whisper_triton.decoding import DecodeOptions, WindowResult

ENTRY_MODEL = "whisper"
ENGINE_MODEL = "whisper_engine"

AUDIO = "AUDIO"
MODEL = "MODEL"
TRANSCRIPT = "TRANSCRIPT"
TASK = "TASK"
LANGUAGE = "LANGUAGE"
PROMPT = "PROMPT"
TEMPERATURE = "TEMPERATURE"
WORD_TIMESTAMPS = "WORD_TIMESTAMPS"
TIMESTAMPS = "TIMESTAMPS"
VAD = "VAD"
STREAM = "STREAM"
PROFILE = "PROFILE"
EVENT = "EVENT"

DIARIZATION_MODEL = "diarization"
DIARIZE = "DIARIZE"
NUM_SPEAKERS = "NUM_SPEAKERS"
MIN_SPEAKERS = "MIN_SPEAKERS"
MAX_SPEAKERS = "MAX_SPEAKERS"
WAVEFORM = "WAVEFORM"
TURNS = "TURNS"
KNOWN_SPEAKER_NAMES = "KNOWN_SPEAKER_NAMES"
KNOWN_SPEAKER_REFERENCES = "KNOWN_SPEAKER_REFERENCES"
KNOWN_SPEAKER_EMBEDDINGS = "KNOWN_SPEAKER_EMBEDDINGS"
EMBED = "EMBED"
EMBEDDING = "EMBEDDING"
EMBEDDING_MODEL = "EMBEDDING_MODEL"

SAMPLES = "SAMPLES"
LENGTHS = "LENGTHS"
OPTIONS = "OPTIONS"
CANCEL = "CANCEL"
RESULT = "RESULT"
WINDOW_SAMPLES = 30 * 16_000

_encoder = msgspec.json.Encoder()


@cache
def _decoder(name: str) -> msgspec.json.Decoder[Any]:
    from whisper_triton import decoding

    return msgspec.json.Decoder(getattr(decoding, name))


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def decode_options(data: bytes) -> DecodeOptions:
    """Raises ValueError (msgspec's errors are ValueErrors) for options no window can be decoded with."""
    options: DecodeOptions = _decoder("DecodeOptions").decode(data)
    if not options.temperatures or not all(0.0 <= t <= 1.0 for t in options.temperatures):
        raise ValueError("temperatures must be one or more values from 0 to 1")
    if not 1 <= options.beam_size <= 64:
        raise ValueError("beam_size must be from 1 to 64")
    return options


def decode_result(data: bytes) -> WindowResult:
    result: WindowResult = _decoder("WindowResult").decode(data)
    return result


def encode_failure(window: int, message: str) -> bytes:
    """A window's failure, in RESULT: its message in the `[code(param)] text` wire form of errors."""
    return _encoder.encode({"error": message, "window": window})


def decode_outcome(data: bytes) -> tuple[int, WindowResult | str]:
    """A RESULT: (window index, its result or its failure message)."""
    if data.startswith(b'{"error"'):
        failure = msgspec.json.decode(data)
        return int(failure["window"]), str(failure["error"])
    result = decode_result(data)
    return result.window, result


def decode_transcript(data: bytes) -> list[dict[str, object]]:
    """`{"segments": [...]}` or a bare list of `{start, end, text}`."""
    value = msgspec.json.decode(data)
    if isinstance(value, dict):
        value = value.get("segments")
    if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
        raise ValueError("a transcript is a list of segments or an object with 'segments'")
    return value


def decode_event(data: bytes) -> dict[str, object]:
    event = msgspec.json.decode(data)
    if not isinstance(event, dict):
        raise ValueError("an event is a JSON object")
    return event
