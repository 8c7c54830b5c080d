"""Whisper's tokenizer, for any language and task, loaded from the model directory."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import tokenizers
from faster_whisper.tokenizer import Tokenizer

from whisper_triton.languages import supported_languages


class WhisperTokenizer:
    """One `tokenizers` vocabulary shared by per-(language, task) faster-whisper tokenizers."""

    def __init__(self, tokenizer_file: Path, multilingual: bool, num_languages: int) -> None:
        self._vocab = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        self.multilingual = multilingual
        self.languages = supported_languages(num_languages) if multilingual else ["en"]
        self._by_key: dict[tuple[str, str], Tokenizer] = {}

    def get(self, language: str = "en", task: str = "transcribe") -> Tokenizer:
        key = (language, task)
        if key not in self._by_key:
            self._by_key[key] = Tokenizer(
                self._vocab,
                self.multilingual,
                task=task if self.multilingual else None,
                language=language if self.multilingual else None,
            )
        return self._by_key[key]

    @cached_property
    def _base(self) -> Tokenizer:
        return self.get("en", "transcribe")

    @property
    def eot(self) -> int:
        return int(self._base.eot)

    @property
    def sot_prev(self) -> int:
        return int(self._base.sot_prev)

    @property
    def no_timestamps(self) -> int:
        return int(self._base.no_timestamps)

    @property
    def timestamp_begin(self) -> int:
        return int(self._base.timestamp_begin)

    def sot_sequence(self, language: str, task: str) -> list[int]:
        return list(self.get(language, task).sot_sequence)

    def encode(self, text: str) -> list[int]:
        return list(self._base.encode(text))

    def decode(self, tokens: list[int]) -> str:
        return str(self._base.decode([t for t in tokens if t < self.eot]))

    @cached_property
    def _byte_of(self) -> dict[str, int]:
        """The byte each character of a byte-level BPE token stands for (GPT-2's printable byte alphabet)."""
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        chars = {byte: chr(byte) for byte in printable}
        extra = 0
        for byte in range(256):
            if byte not in chars:
                chars[byte] = chr(256 + extra)
                extra += 1
        return {char: byte for byte, char in chars.items()}

    def token_bytes(self, token: int) -> bytes:
        """The UTF-8 bytes a text token stands for (part of a character, for some)."""
        piece = self._vocab.id_to_token(token) or ""
        return bytes(self._byte_of[char] for char in piece)

    def split_to_word_tokens(self, language: str, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        words, word_tokens = self.get(language).split_to_word_tokens(tokens)
        return list(words), [list(t) for t in word_tokens]
