"""Known speakers of a request: reference clips and stored voices, checked and made into embeddings.

OpenAI's diarization takes `known_speaker_names[]` with `known_speaker_references[]` (short clips of
each speaker); clusters whose voice matches a reference are labelled with the name. Voices can also
come as embeddings (from `TASK=embed`, e.g. speakers stored by the frontend's /v1/speakers API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from whisper_triton.audio import decode_audio
from whisper_triton.errors import InvalidAudioError, InvalidRequestError, ServiceError
from whisper_triton.speakers import KnownSpeaker, check_name

# OpenAI asks for 2-10 s clips; shorter than a second holds too little voice for an embedding, and a
# clip much longer than needed only costs time.
MIN_REFERENCE_SECONDS = 1.0
MAX_REFERENCE_SECONDS = 30.0
MAX_KNOWN_SPEAKERS = 32

# The voice of a clip of one speaker: (L2-normalised embedding, name of the embedding model).
EmbedFn = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, str]]]


@dataclass(frozen=True)
class KnownVoices:
    """Names: one per reference clip, then one per embedding row."""

    names: tuple[str, ...] = ()
    references: tuple[bytes, ...] = ()
    embeddings: tuple[np.ndarray, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names or self.references or self.embeddings)


def check_voices(voices: KnownVoices) -> None:
    """Counts and names, before any audio is decoded."""
    given = len(voices.references) + len(voices.embeddings)
    if len(voices.names) != given:
        raise InvalidRequestError(
            f"Give one known_speaker_names entry per known_speaker_references entry "
            f"({len(voices.names)} names for {given} voices).",
            param="known_speaker_names",
        )
    if len(voices.names) > MAX_KNOWN_SPEAKERS:
        raise InvalidRequestError(f"At most {MAX_KNOWN_SPEAKERS} known speakers per request.",
                                  param="known_speaker_names")
    seen: set[str] = set()
    for name in voices.names:
        check_name(name)
        if name in seen:
            raise InvalidRequestError(f"The known speaker name '{name}' is given twice.", param="known_speaker_names")
        seen.add(name)


def voice_samples(data: bytes, param: str = "file", label: str = "The voice sample") -> np.ndarray:
    """16 kHz samples of a clip of one voice, between MIN and MAX_REFERENCE_SECONDS long."""
    try:
        decoded = decode_audio(data, MAX_REFERENCE_SECONDS + 1)
    except InvalidAudioError as exc:
        raise InvalidAudioError(f"{label}: {exc.message}", param=param) from exc
    if not MIN_REFERENCE_SECONDS <= decoded.duration <= MAX_REFERENCE_SECONDS:
        raise InvalidAudioError(
            f"{label} is {decoded.duration:.1f} s long; give {MIN_REFERENCE_SECONDS:g} to "
            f"{MAX_REFERENCE_SECONDS:g} s of one speaker (2 to 10 s works best).",
            param=param,
        )
    return decoded.samples


def reference_samples(voices: KnownVoices) -> list[np.ndarray]:
    return [
        voice_samples(clip, "known_speaker_references", f"Known speaker reference {i + 1} ({name})")
        for i, (clip, name) in enumerate(zip(voices.references, voices.names, strict=False))
    ]


async def known_speakers(voices: KnownVoices, clips: Sequence[np.ndarray], embed: EmbedFn) -> list[KnownSpeaker]:
    """Embeds the reference clips (decoded by `reference_samples`) and adds the given embeddings."""
    speakers = []
    for name, clip in zip(voices.names, clips, strict=False):
        try:
            vector, _ = await embed(clip)
        except ServiceError as exc:
            if exc.client_fault:
                exc.param = "known_speaker_references"
            raise
        speakers.append(KnownSpeaker(name, vector))
    stored = voices.names[len(clips):]
    speakers.extend(KnownSpeaker(name, np.asarray(row, dtype=np.float32)) for name, row in
                    zip(stored, voices.embeddings, strict=True))
    return speakers
