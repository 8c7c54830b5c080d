"""The Triton models' tensors and the types that travel in them, shared by both sides of each call.

Entry model `whisper` (decoupled; call it with gRPC streaming):
  inputs  AUDIO  BYTES [1]  the file: any container FFmpeg reads
          the optional inputs of `INPUTS`, one per field of `TranscriptionRequest`
          TIMESTAMPS  BOOL [1]  optional, ignored: every window is decoded with timestamps (kept so that
                                older clients still work)
  output  EVENT  BYTES [1]  one JSON `Event` per response: with STREAM, a `segments` event per decoded window,
                            in order; always a final `done` event
  TASK=embed returns one `done` event with the speaker embedding of AUDIO (a clip of one voice).

Diarization model `diarization`:
  inputs  WAVEFORM                  FP32  [-1]     16 kHz mono
          NUM_SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS  INT32 [1]  optional
          KNOWN_SPEAKER_NAMES       BYTES [-1]     optional, one per embedding row
          KNOWN_SPEAKER_EMBEDDINGS  FP32  [-1, -1] optional
          EMBED                     BOOL  [1]      optional: true = embed WAVEFORM (one voice), no turns
  outputs TURNS                     BYTES [1]      JSON [`Turn`] (empty when embedding)
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

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec
import numpy as np

from whisper_triton.errors import InvalidRequestError

if TYPE_CHECKING:  # the frontend imports this module: it needs no tokenizer or engine code
    from whisper_triton.decoding import DecodeOptions, WindowResult

ENTRY_MODEL = "whisper"
ENGINE_MODEL = "whisper_engine"
LIVE_MODEL = "whisper_live"  # live audio sessions: see whisper_triton/live_contract.py

AUDIO = "AUDIO"
MODEL = "MODEL"
TRANSCRIPT = "TRANSCRIPT"
TASK = "TASK"
LANGUAGE = "LANGUAGE"
LIVE = "LIVE"
REQUEST_ID = "REQUEST_ID"
LOGPROBS = "LOGPROBS"
VAD_OPTIONS = "VAD_OPTIONS"
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


# The request: everything a client asks of the entry model besides the audio.


class VadParameters(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """TASK=vad: how speech regions are found (speaches' names and defaults, faster-whisper's meaning)."""

    threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.75  # frames above: speech
    neg_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None  # below: silence (None: threshold-0.15)
    min_speech_duration_ms: Annotated[int, msgspec.Meta(ge=0)] = 0  # shorter regions are dropped
    max_speech_duration_s: Annotated[float, msgspec.Meta(gt=0)] | None = None  # longer ones are split; None: never
    min_silence_duration_ms: Annotated[int, msgspec.Meta(ge=0)] = 1000  # shorter silences do not end a region
    speech_pad_ms: Annotated[int, msgspec.Meta(ge=0)] = 0  # added on each side of a region


class TranscriptionRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """One optional input tensor per field (`INPUTS`); an absent tensor means the field's default."""

    model: str | None = None  # a served model id; None: the first of WHISPER_MODELS
    task: str = "transcribe"  # transcribe | translate | diarize (speaker turns only) | embed (a voice's embedding)
    language: str | None = None  # ISO-639-1 or BCP-47; None: detected
    prompt: str | None = None
    temperature: float = 0.0  # 0: automatic fallback
    word_timestamps: bool = False
    vad: bool = True
    stream: bool = False
    profile: bool = False
    transcript: list[dict[str, Any]] | None = None  # segments [{start, end, text}] to align, not transcribe
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    # Known speakers: one name per reference clip, then one per embedding row (stored voices).
    known_speaker_names: tuple[str, ...] = ()
    known_speaker_references: tuple[bytes, ...] = ()
    known_speaker_embeddings: tuple[tuple[float, ...], ...] = ()
    live: bool = False  # a live turn: its windows go before file windows at the engine
    request_id: str | None = None  # the id its windows carry at the engine; None: a random one
    logprobs: bool = False  # segments carry the log-probability of each text token
    vad_options: VadParameters | None = None  # TASK=vad; None: VadParameters()

    @property
    def needs_diarization(self) -> bool:
        """Whether the request needs the diarization model (speaker turns, or a voice's embedding)."""
        return self.diarize or self.task in ("diarize", "embed")

    @property
    def needs_engine(self) -> bool:
        """Whether the request runs a Whisper engine: not speaker turns alone, a voice's embedding or VAD."""
        return self.task not in ("diarize", "embed", "vad")


class Kind(NamedTuple):
    """How one field travels: its Triton data type and shape, and its conversions to and from numpy."""

    datatype: str
    dims: tuple[int, ...]
    to_array: Callable[[Any], np.ndarray]
    from_array: Callable[[np.ndarray], Any]  # None: absent (the field keeps its default)


def _first(array: np.ndarray) -> Any:
    flat = array.reshape(-1)
    return flat[0] if len(flat) else None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _read_text(array: np.ndarray) -> str | None:
    value = _first(array)
    return None if value is None else _text(value) or None


def _read_count(array: np.ndarray) -> int | None:
    value = _first(array)
    return int(value) if value is not None and int(value) > 0 else None


def _read_rows(array: np.ndarray) -> tuple[tuple[float, ...], ...]:
    if array.size == 0:
        return ()
    return tuple(tuple(float(v) for v in row) for row in array.reshape(array.shape[0], -1))


def _read_vad_options(array: np.ndarray) -> VadParameters | None:
    value = _first(array)
    if value is None:
        return None
    try:
        return _vad_options_decoder.decode(bytes(value))
    except (ValueError, msgspec.DecodeError) as exc:
        raise InvalidRequestError(f"VAD_OPTIONS is not valid: {exc}", param="vad_options") from exc


def _read_transcript(array: np.ndarray) -> list[dict[str, Any]] | None:
    value = _first(array)
    if value is None:
        return None
    try:
        return decode_transcript(bytes(value))
    except (ValueError, msgspec.DecodeError) as exc:
        raise InvalidRequestError(f"TRANSCRIPT is not valid: {exc}", param="transcript") from exc


# dtype=object for bytes: numpy's bytes_ type would drop trailing zero bytes.
TEXT = Kind("BYTES", (1,), lambda v: np.array([v.encode()], dtype=object), _read_text)
JSON = Kind("BYTES", (1,), lambda v: np.array([msgspec.json.encode(v)], dtype=object), _read_transcript)
FLAG = Kind("BOOL", (1,), lambda v: np.array([v], dtype=bool),
            lambda a: None if _first(a) is None else bool(_first(a)))
REAL = Kind("FP32", (1,), lambda v: np.array([v], dtype=np.float32),
            lambda a: None if _first(a) is None else float(_first(a)))
COUNT = Kind("INT32", (1,), lambda v: np.array([v], dtype=np.int32), _read_count)
TEXTS = Kind("BYTES", (-1,), lambda v: np.array([s.encode() for s in v], dtype=object),
             lambda a: tuple(_text(s) for s in a.reshape(-1)))
BLOBS = Kind("BYTES", (-1,), lambda v: np.array(list(v), dtype=object),
             lambda a: tuple(bytes(b) for b in a.reshape(-1)))
VAD_PARAMETERS = Kind("BYTES", (1,), lambda v: np.array([msgspec.json.encode(v)], dtype=object), _read_vad_options)
ROWS = Kind("FP32", (-1, -1), lambda v: np.array(v, dtype=np.float32), _read_rows)


class Input(NamedTuple):
    field: str  # of TranscriptionRequest
    tensor: str
    kind: Kind
    doc: str


INPUTS = (
    Input("model", MODEL, TEXT, "a model id of `WHISPER_MODELS`; default: the first"),
    Input("task", TASK, TEXT, "`transcribe` (default), `translate`, `diarize` (speaker turns only: `done` has "
          "`speakers` and no segments), `embed` (the voice of a 1-30 s clip of one speaker: `done` has "
          "`embedding`, 192 floats, L2-normalised, and `embedding_model`) or `vad` (speech regions by the "
          "pipeline's VAD, tuned by `VAD_OPTIONS`: `done` has `speech`, `[{start, end}]` in seconds, no segments)"),
    Input("language", LANGUAGE, TEXT, "ISO-639-1 / BCP-47 / name; absent or empty: detect"),
    Input("prompt", PROMPT, TEXT, "initial prompt (vocabulary, style)"),
    Input("temperature", TEMPERATURE, REAL, "0 (default): automatic fallback"),
    Input("word_timestamps", WORD_TIMESTAMPS, FLAG, "default false"),
    Input("vad", VAD, FLAG, "default true: no text where VAD finds no speech, audio over 30 s split at silences "
          "(false: every sample decoded, in fixed 30 s windows)"),
    Input("stream", STREAM, FLAG, "default false: one response; true: one response per decoded window"),
    Input("profile", PROFILE, FLAG, "default false; true: `done` has `profile`, the seconds spent per stage "
          "(`decode`, `vad`, `engine_queue`, `engine_features`, `engine_encode`, `engine_language`, "
          "`engine_decode`, `engine_fallback`, `engine_resume`, `engine_words`, `transfer`; engine stages are each "
          "window's share of its batch), `windows`, `resumes`, `mean_batch`, `wall`, and what was caught: `loops` "
          "(repetition loops cut to one copy), `looping_passes` (passes decoded again because they looped), "
          "`dropped_away_from_speech`, `dropped_in_silence`, `dropped_too_fast` (segments dropped as invented)"),
    Input("transcript", TRANSCRIPT, JSON, "JSON segments `[{start, end, text}]` (or `{\"segments\": [...]}`): "
          "align this text (word timings) instead of transcribing; the `done` event has `\"task\": \"align\"`"),
    Input("diarize", DIARIZE, FLAG, "speakers on segments and words (segments split at speaker changes); `done` "
          "also has `speakers`, the turns `[{start, end, speaker}]`. Needs the `diarization` model loaded (model "
          "control API; the HTTP frontend loads it on first use)"),
    Input("num_speakers", NUM_SPEAKERS, COUNT, "speaker count hint"),
    Input("min_speakers", MIN_SPEAKERS, COUNT, "speaker count hint"),
    Input("max_speakers", MAX_SPEAKERS, COUNT, "speaker count hint"),
    Input("known_speaker_names", KNOWN_SPEAKER_NAMES, TEXTS,
          "one name per reference clip, then one per embedding row; matching clusters carry the name"),
    Input("known_speaker_references", KNOWN_SPEAKER_REFERENCES, BLOBS,
          "clips of one speaker each (any container, 1-30 s)"),
    Input("known_speaker_embeddings", KNOWN_SPEAKER_EMBEDDINGS, ROWS,
          "voices from `TASK=embed` (what `/v1/speakers` stores)"),
    Input("live", LIVE, FLAG, "default false; true: a live turn (what `whisper_live` sends): its windows go "
          "before every file's at the engine, in batches of live windows only; with no `PROMPT` or `LOGPROBS`, turns "
          "waiting together may share one Whisper window (`WHISPER_ENGINE_PACK_TURNS`), each getting back only its "
          "own words; a turn without `LANGUAGE` then has its language guessed on its own audio (the guess, when "
          "taken, is the `done` event's `language` and `language_probability`)"),
    Input("request_id", REQUEST_ID, TEXT, "the id the request's windows carry at the engine (default: a random "
          "one): a caller that gives up on the request drops its queued windows with `CANCEL` to the engine model"),
    Input("logprobs", LOGPROBS, FLAG, "default false; true: each segment has `logprobs`, `[{token, logprob, bytes}]` "
          "for its text tokens (OpenAI's `include[]=logprobs`)"),
    Input("vad_options", VAD_OPTIONS, VAD_PARAMETERS, "with `TASK=vad`: JSON `{threshold, neg_threshold, "
          "min_speech_duration_ms, max_speech_duration_s, min_silence_duration_ms, speech_pad_ms}`, each optional "
          "(defaults 0.75, threshold - 0.15, 0, no limit, 1000, 0)"),
)
_DEFAULTS = TranscriptionRequest()


def request_arrays(audio: bytes, request: TranscriptionRequest) -> dict[str, np.ndarray]:
    """The entry model's input tensors for a request: AUDIO, and each field that is not its default."""
    arrays = {AUDIO: np.array([audio], dtype=object)}
    for item in INPUTS:
        value = getattr(request, item.field)
        if value != getattr(_DEFAULTS, item.field):
            arrays[item.tensor] = item.kind.to_array(value)
    return arrays


def read_request(tensor: Callable[[str], np.ndarray | None]) -> tuple[bytes, TranscriptionRequest]:
    """The audio and the request of the entry model's inputs (`tensor(name)`: its array, None when absent)."""
    fields = {}
    for item in INPUTS:
        array = tensor(item.tensor)
        value = None if array is None else item.kind.from_array(array)
        if value is not None:
            fields[item.field] = value
    audio = tensor(AUDIO)
    data = None if audio is None else _first(audio)
    return data if isinstance(data, bytes) else b"", TranscriptionRequest(**fields)


# What the entry model answers: events carrying segments and words, one type each from the engine to the wire.


class Word(msgspec.Struct, omit_defaults=True):
    word: str
    start: float  # seconds: into the window from the engine, into the audio in events
    end: float
    probability: float
    tokens: list[int]
    speaker: str | None = None  # with diarization


class TokenLogprob(msgspec.Struct, frozen=True):
    """OpenAI's `logprobs` item: a token's text, its log-probability, and its UTF-8 bytes (a token may hold
    part of a character: its `token` then has U+FFFD for the incomplete bytes)."""

    token: str
    logprob: float
    bytes: list[int]


class Segment(msgspec.Struct, omit_defaults=True):
    start: float  # seconds: into the window from the engine, into the audio in events
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = []  # with word timestamps
    id: int | None = None  # its place in the request's segments (events only)
    seek: int | None = None  # the log-mel frame its window starts at (events only)
    speaker: str | None = None  # with diarization
    logprobs: list[TokenLogprob] = []  # with LOGPROBS: one per text token


def token_logprobs(segments: list[Segment]) -> list[TokenLogprob]:
    """The log-probabilities of the segments' text tokens, in order (OpenAI's `logprobs`)."""
    return [token for segment in segments for token in segment.logprobs]


class Turn(msgspec.Struct, frozen=True):
    """A stretch of one speaker's speech."""

    start: float  # seconds
    end: float
    speaker: str  # "SPEAKER_00", ..., or a known speaker's name


class Span(msgspec.Struct, frozen=True):
    """A stretch of speech (TASK=vad)."""

    start: float  # seconds
    end: float


class SegmentsEvent(msgspec.Struct, tag_field="type", tag="segments"):
    """The segments of the next window (in order), with the fraction of windows done."""

    language: str | None
    progress: float
    segments: list[Segment]


class DoneEvent(msgspec.Struct, tag_field="type", tag="done", omit_defaults=True):
    """The last event of a request: the whole result."""

    task: str  # transcribe | translate | diarize | align | embed
    language: str | None  # ISO code
    duration: float  # seconds of audio
    text: str
    segments: list[Segment]
    speakers: list[Turn] | None = None  # with diarization: the speaker turns
    profile: dict[str, Any] | None = None  # with PROFILE: seconds per stage and counts
    embedding: list[float] | None = None  # TASK=embed: 192 floats, L2-normalised
    embedding_model: str | None = None  # TASK=embed: names the embedding space
    speech: list[Span] | None = None  # TASK=vad: the speech regions
    language_probability: float | None = None  # the detected language's probability (none when it was given)


Event = SegmentsEvent | DoneEvent

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
_vad_options_decoder = msgspec.json.Decoder(VadParameters)


@cache
def _decoder(name: str) -> msgspec.json.Decoder[Any]:
    from whisper_triton import decoding

    return msgspec.json.Decoder(getattr(decoding, name))


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def decode_event(data: bytes) -> Event:
    return _event_decoder.decode(data)


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


def decode_transcript(data: bytes) -> list[dict[str, Any]]:
    """`{"segments": [...]}` or a bare list of `{start, end, text}`."""
    value = msgspec.json.decode(data)
    if isinstance(value, dict):
        value = value.get("segments")
    if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
        raise ValueError("a transcript is a list of segments or an object with 'segments'")
    return value
