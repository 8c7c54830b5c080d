"""Frontend settings: `FRONTEND_*` environment variables (plus WHISPER_MODEL for the model id)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from whisper_triton.models import model_id
from whisper_triton.settings import SettingsError, load_settings

DEFAULT_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                   "gpt-4o-mini-transcribe-2025-12-15", "gpt-transcribe")  # fmt: skip


class FrontendSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    triton_url: str = "127.0.0.1:8001"
    model_name: str = ""  # empty: the id of WHISPER_MODEL (default base)
    model_aliases: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ALIASES))
    api_keys: list[str] = msgspec.field(default_factory=list)
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's limit: 26,214,400 bytes
    max_concurrent_requests: int = 64
    retry_after_s: int = 5
    log_level: str = "info"

    @property
    def served_model(self) -> str:
        return self.model_name

    def resolve_model(self, requested: str) -> str | None:
        """The served model for a requested id or alias; None when it is not served."""
        if requested in (self.served_model, *self.model_aliases):
            return self.served_model
        return None


def frontend_settings(environ: Mapping[str, str] | None = None) -> FrontendSettings:
    settings = load_settings(FrontendSettings, "FRONTEND_", environ)
    if environ is None:
        environ = os.environ
    if settings.max_upload_bytes <= 0:
        raise SettingsError("Invalid value for FRONTEND_MAX_UPLOAD_BYTES: must be positive.")
    if settings.max_concurrent_requests <= 0:
        raise SettingsError("Invalid value for FRONTEND_MAX_CONCURRENT_REQUESTS: must be positive.")
    if not settings.model_name:
        name = model_id(environ.get("WHISPER_MODEL") or "base")
        settings = msgspec.structs.replace(settings, model_name=name)
    return settings
