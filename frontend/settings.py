"""Frontend settings: `FRONTEND_*` environment variables (plus WHISPER_MODEL for the model id)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

from frontend.keys import KeyRing
from frontend.limits import KeyLimits, limits_table
from whisper_triton.models import model_id
from whisper_triton.repository import model_specs
from whisper_triton.settings import SettingsError, load_settings

DEFAULT_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                   "gpt-4o-mini-transcribe-2025-12-15", "gpt-transcribe", "gpt-4o-transcribe-diarize")  # fmt: skip


class FrontendSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    triton_url: str = "127.0.0.1:8001"
    models: list[str] = msgspec.field(default_factory=list)  # empty: the ids of WHISPER_MODELS
    model_name: str = ""  # deprecated alias: a single model id
    model_aliases: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ALIASES))
    api_keys: list[str] = msgspec.field(default_factory=list)
    api_keys_file: str = ""
    admin_api_key: str = ""
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's limit: 26,214,400 bytes
    max_concurrent_requests: int = 64
    fair_slots: int = 16  # transcriptions in Triton at once before requests wait their key's turn
    fair_wait_s: float = 60.0
    retry_after_s: int = 5
    # Per-key limits (0 = unlimited), the same for every key unless key_limits names it
    key_requests_per_minute: int = 0
    key_audio_seconds_per_hour: float = 0.0
    key_audio_seconds_per_day: float = 0.0
    key_max_concurrent: int = 0
    key_max_queued_tasks: int = 0
    key_limits: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    log_level: str = "info"
    log_json: bool = False
    # Tasks
    db_url: str = ""  # empty: SQLite in data_dir; postgresql://user:pass@host/db for several replicas
    data_dir: str = "data"
    max_task_queue_size: int = 100
    task_workers: int = 4
    task_lease_s: float = 30.0
    task_max_attempts: int = 3
    delete_results_after_m: float = 24 * 60.0
    allow_private_urls: bool = False
    url_timeout_s: float = 60.0
    webhook_secret: str = ""  # empty: generated once and kept in data_dir/webhook_secret
    webhook_attempts: int = 5
    docs: str = "open"  # /docs and /docs/openapi.json: open | auth (keys needed when set) | off
    cors_origins: list[str] = msgspec.field(default_factory=list)  # empty: no CORS headers at all
    realtime_max_session_s: float = 3600.0
    realtime_idle_s: float = 600.0

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.api_keys_file or self.admin_api_key)

    def key_ring(self) -> KeyRing:
        """The configured keys (SettingsError for a bad entry or keys file)."""
        return KeyRing.from_settings(self.api_keys, self.api_keys_file, self.admin_api_key)

    def key_limits_table(self, keys: KeyRing | None = None) -> dict[str, KeyLimits]:
        """Each key's limits where FRONTEND_KEY_LIMITS changes the defaults (SettingsError for an unknown key
        name or limit)."""
        names = [k.name for k in (keys or self.key_ring()).keys]
        return limits_table(self.default_key_limits, self.key_limits, names)

    def key_limits_for(self, name: str) -> KeyLimits:
        """The limits of the key named `name` (the defaults unless FRONTEND_KEY_LIMITS names it)."""
        given = {name: self.key_limits[name]} if name in self.key_limits else {}
        return limits_table(self.default_key_limits, given, [name]).get(name, self.default_key_limits)

    @property
    def default_key_limits(self) -> KeyLimits:
        return KeyLimits(requests_per_minute=self.key_requests_per_minute,
                         audio_seconds_per_hour=self.key_audio_seconds_per_hour,
                         audio_seconds_per_day=self.key_audio_seconds_per_day,
                         max_concurrent=self.key_max_concurrent, max_queued_tasks=self.key_max_queued_tasks)

    unload_model_after_s: float = 0.0  # 0: never unload idle models

    @property
    def model_ids(self) -> list[str]:
        return self.models or [self.model_name or "base"]

    @property
    def served_model(self) -> str:
        """The default model: the first of `models`."""
        return self.model_ids[0]

    def resolve_model(self, requested: str) -> str | None:
        """The served model for a requested id or alias (aliases mean the default); None if not served."""
        if requested in self.model_ids:
            return requested
        if requested in self.model_aliases:
            return self.served_model
        return None


DOCS_MODES = ("open", "auth", "off")
_ORIGIN = re.compile(r"https?://[^/\s?#]+")

# The names users of insanely-fast-whisper-api / whisperX-FastAPI already set, without prefix.
BARE_NAMES = ("DB_URL", "MAX_TASK_QUEUE_SIZE", "ALLOW_PRIVATE_URLS", "DELETE_RESULTS_AFTER_M", "ADMIN_API_KEY",
              "API_KEYS", "API_KEYS_FILE", "WEBHOOK_SECRET", "UNLOAD_MODEL_AFTER_S")

# What each FRONTEND_* setting means: docs/configuration.md is generated from these and the defaults above
# (`python -m harness.docs`; a unit test fails when a field has no entry or the page is out of date).
FRONTEND_SETTINGS_HELP = {
    "host": "HTTP listen address (not loopback: keys required)",
    "port": "HTTP port",
    "triton_url": "Triton gRPC endpoint (under `make serve`: the Triton it starts)",
    "models": "the model ids the frontend accepts, default first; empty = the ids of `WHISPER_MODELS`",
    "model_name": "deprecated: one model id, for `FRONTEND_MODELS`",
    "model_aliases": "other ids accepted for the default model (comma-separated or JSON); "
                     "`gpt-4o-transcribe-diarize` also asks for diarization",
    "api_keys": "accepted `Authorization: Bearer` keys, `<key>` or `<name>:<key>` (comma-separated or JSON); each "
                "key sees only its own work; empty = open, on 127.0.0.1 only (a warning is logged)",
    "api_keys_file": "a file of `<name>:sha256:<hex>` lines (hashes only; `python -m frontend.keys <name>` makes one), "
                     "read at start",
    "admin_api_key": "admin key: `x-admin-api-key` header or bearer; sees every key's work, acts for one with "
                     "`x-act-as-key: <name>`",
    "max_upload_bytes": "largest file (OpenAI's 25 MiB)",
    "max_concurrent_requests": "synchronous transcriptions in flight and waiting their turn before 503 (the "
                               "server is full)",
    "fair_slots": "synchronous transcriptions sent to Triton at once; beyond, requests wait in one queue per key, "
                  "served in turn (fair share, see [limits](limits.md)); at least the engine's batch",
    "fair_wait_s": "longest wait for a turn before 503",
    "retry_after_s": "`Retry-After` on 503",
    "key_requests_per_minute": "requests per minute of each key that start work (transcriptions, chat completions); "
                               "0 = unlimited; 429 beyond",
    "key_audio_seconds_per_hour": "seconds of audio each key may have transcribed per hour (counted as each "
                                  "transcription ends); 0 = unlimited",
    "key_audio_seconds_per_day": "seconds of audio each key may have transcribed per day; 0 = unlimited",
    "key_max_concurrent": "synchronous transcriptions of one key at once; 0 = unlimited",
    "key_max_queued_tasks": "queued tasks of one key; 0 = unlimited",
    "key_limits": "JSON: other limits for named keys, e.g. `{\"alice\": {\"requests_per_minute\": 600}}` (fields: "
                  "the `key_*` settings without `key_`); the admin key is never limited",
    "log_level": "log level",
    "log_json": "JSON lines logs",
    "db_url": "`postgresql://user:pass@host/db` or `sqlite:///path`; empty = SQLite `$FRONTEND_DATA_DIR/tasks.db`",
    "data_dir": "SQLite database, generated webhook secret",
    "max_task_queue_size": "queued tasks before 503",
    "task_workers": "tasks run at once by this replica (Triton batches their windows)",
    "task_lease_s": "a running task whose lease is older is taken as interrupted",
    "task_max_attempts": "interruptions before a task is failed",
    "delete_results_after_m": "minutes finished tasks and results are kept",
    "allow_private_urls": "allow audio URLs and webhooks to private/loopback addresses",
    "url_timeout_s": "time limit for fetching an audio URL",
    "webhook_secret": "HMAC key of webhook signatures; empty = generated into `$FRONTEND_DATA_DIR/webhook_secret`",
    "webhook_attempts": "webhook delivery attempts",
    "docs": "`/docs` and `/docs/openapi.json`: `open`, `auth` (needs a key when keys are set) or `off` (404)",
    "cors_origins": "allowed browser origins, `scheme://host[:port]` or `*` (comma-separated or JSON); no "
                    "credentials; exposes `Retry-After`, `x-should-retry` and `x-request-id`; empty = no CORS headers",
    "realtime_max_session_s": "a Realtime (WebSocket) session ends after this long (`session_expired`, close 1001)",
    "realtime_idle_s": "a Realtime session without a client event for this long is closed",
    "unload_model_after_s": "unload a model's engine after this many idle seconds; 0 = never",
}


def frontend_settings(environ: Mapping[str, str] | None = None, triton_url: str | None = None) -> FrontendSettings:
    """The settings from the environment; `triton_url` replaces the default Triton address (the one `make serve`
    starts) unless FRONTEND_TRITON_URL is set."""
    if environ is None:
        environ = os.environ
    defaults = {"FRONTEND_TRITON_URL": triton_url} if triton_url else {}
    environ = {**defaults, **{f"FRONTEND_{name}": environ[name] for name in BARE_NAMES if name in environ},
               **environ}
    settings = load_settings(FrontendSettings, "FRONTEND_", environ)
    if settings.max_upload_bytes <= 0:
        raise SettingsError("Invalid value for FRONTEND_MAX_UPLOAD_BYTES: must be positive.")
    for name in ("max_concurrent_requests", "max_task_queue_size", "task_workers", "task_max_attempts",
                 "realtime_max_session_s", "realtime_idle_s"):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"Invalid value for FRONTEND_{name.upper()}: must be positive.")
    if settings.docs not in DOCS_MODES:
        raise SettingsError(f"Invalid value for FRONTEND_DOCS: use one of {', '.join(DOCS_MODES)}.")
    for origin in settings.cors_origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise SettingsError(f"Invalid origin {origin[:100]!r} in FRONTEND_CORS_ORIGINS: use scheme://host[:port] "
                                "(or * for any origin).")
    settings.key_limits_table()  # a bad key entry, keys file or limit fails at start, naming the variable
    if settings.fair_slots <= 0 or settings.fair_wait_s < 0:
        raise SettingsError("Invalid value for FRONTEND_FAIR_SLOTS or FRONTEND_FAIR_WAIT_S: slots must be positive, "
                            "the wait 0 or more.")
    if not settings.auth_enabled and settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError(
            f"FRONTEND_HOST={settings.host} would open the API to the network without authentication: "
            "set FRONTEND_API_KEYS (or ADMIN_API_KEY), or keep FRONTEND_HOST=127.0.0.1."
        )
    if not settings.models:
        ids = [settings.model_name] if settings.model_name else [model_id(s) for s in model_specs(environ)]
        settings = msgspec.structs.replace(settings, models=ids)
    return settings
