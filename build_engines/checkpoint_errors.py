"""The one error the checkpoint converter raises for bad input: its message says what to fix."""

from __future__ import annotations


class ConversionError(Exception):
    """A source, output or option the converter cannot use (missing, not Whisper, unknown dtype, ...)."""
