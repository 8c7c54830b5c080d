"""OpenAI's audio request form (`/v1/audio/transcriptions` and `/translations`), validated."""

from __future__ import annotations

from dataclasses import dataclass

from frontend.errors import bad_request
from frontend.request_bodies import FormReader, UploadedFile, data_url_audio
from whisper_triton.contract import TranscriptionRequest

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
GRANULARITIES = ("word", "segment")


@dataclass(frozen=True)
class AudioForm:
    """A validated transcription or translation request: the entry model's request, and how to answer."""

    file: UploadedFile
    model: str  # as the client named it (an alias, or a served model id); `request.model` too until resolved
    response_format: str
    timestamp_granularities: tuple[str, ...]
    request: TranscriptionRequest


def parse_audio_form(
    fields: dict[str, list[str]], files: dict[str, UploadedFile], task: str
) -> AudioForm:
    upload = files.get("file")
    if upload is None:
        raise bad_request(
            "You must provide a 'file' part with the audio.", param="file", code="missing_required_parameter"
        )
    reader = FormReader(fields)
    model = reader.text("model")
    if model is None:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    response_format = (reader.text("response_format") or "json").strip().lower()
    allowed = RESPONSE_FORMATS if task == "transcribe" else RESPONSE_FORMATS[:-1]
    if response_format not in allowed:
        raise bad_request(
            f"Unsupported response_format '{response_format}'. Use one of: {', '.join(allowed)}.",
            param="response_format",
            code="unsupported_value",
        )
    granularities = tuple(g.lower() for g in reader.array("timestamp_granularities")) or ("segment",)
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise bad_request(
                f"Unsupported timestamp granularity '{granularity}'. Use 'word' and/or 'segment'.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
    _check_chunking_strategy(reader)
    include = reader.array("include")
    for item in include:
        if item != "logprobs":
            raise bad_request(f"Unsupported include value '{item}'.", param="include", code="unsupported_value")
    diarize = task == "transcribe" and (response_format == "diarized_json" or reader.boolean("diarize")
                                        or model.strip().endswith("-diarize"))
    names, references = _known_speakers(reader, diarize)
    language = reader.text("language")
    languages = reader.array("languages")
    if language is None and len(languages) == 1:
        language = languages[0]
    model = model.strip()
    return AudioForm(
        file=upload,
        model=model,
        response_format=response_format,
        timestamp_granularities=granularities,
        request=TranscriptionRequest(
            model=model,
            task=task,
            language=language.strip() if language and task == "transcribe" else None,
            prompt=_prompt(reader),
            temperature=reader.number("temperature", 0.0, 0.0, 1.0),
            word_timestamps=response_format == "verbose_json" and "word" in granularities,
            stream=reader.boolean("stream"),
            diarize=diarize,
            num_speakers=reader.speaker_count("num_speakers"),
            min_speakers=reader.speaker_count("min_speakers"),
            max_speakers=reader.speaker_count("max_speakers"),
            # Names of known speakers: the first ones with the reference clips, in order; the rest name speakers
            # stored with /v1/speakers.
            known_speaker_names=names,
            known_speaker_references=references,
            # OpenAI returns log-probabilities with `json` only (streamed or not); other formats have no place for
            # them and ignore the option, as does diarization (its segments are split at speaker changes).
            logprobs="logprobs" in include and response_format == "json" and not diarize,
        ),
    )


def _known_speakers(reader: FormReader, diarize: bool) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    names = tuple(name.strip() for name in reader.items("known_speaker_names"))
    references = tuple(data_url_audio(url, "known_speaker_references")
                       for url in reader.items("known_speaker_references"))
    if not names and not references:
        return (), ()
    if not diarize:
        raise bad_request("Known speakers need diarization: use response_format=diarized_json.",
                          param="known_speaker_names")
    if len(references) > len(names):
        raise bad_request(f"{len(references)} known_speaker_references for {len(names)} known_speaker_names: "
                          "give a name for every reference.", param="known_speaker_names")
    return names, references


def _prompt(reader: FormReader) -> str | None:
    prompt = reader.text("prompt")
    keywords = reader.array("keywords")
    if keywords:
        # Whisper has no keyword input; the prompt is where vocabulary hints go.
        prompt = " ".join(p for p in (prompt, ", ".join(keywords) + ".") if p)
    return prompt


def _check_chunking_strategy(reader: FormReader) -> None:
    strategy = reader.object("chunking_strategy")
    if strategy is None or strategy == "auto":
        return
    if isinstance(strategy, str) or strategy.get("type") != "server_vad":
        raise bad_request(
            "chunking_strategy must be 'auto' or an object with type 'server_vad'.",
            param="chunking_strategy",
            code="unsupported_value",
        )
    for key in ("prefix_padding_ms", "silence_duration_ms", "threshold"):
        if key in strategy:
            try:
                float(strategy[key])
            except ValueError:
                raise bad_request(f"chunking_strategy[{key}] must be a number.",
                                  param="chunking_strategy") from None
