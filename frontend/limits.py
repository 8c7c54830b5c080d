"""Per-key limits: requests per minute, audio seconds per hour and per day, concurrent transcriptions.

Each limit is a token bucket that refills continuously (as OpenAI's limits do): a key with 60 requests a
minute may send 60 at once, then one a second. Audio seconds are taken from the bucket when a transcription
ends (its length is known only then), so the request that spends the budget runs and the next one is refused
until the bucket holds a second of audio again. The state lives in this replica's memory (several replicas:
each grants the whole budget). Pure: the clock is passed in, nothing here knows HTTP.

The admin key is never limited; every other key (the `open` caller too, when no key is configured) gets the
defaults, or its own values from `FRONTEND_KEY_LIMITS`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from frontend.keys import ADMIN, Principal
from whisper_triton.errors import RateLimitError
from whisper_triton.settings import SettingsError

Clock = Callable[[], float]
RefusedFn = Callable[[str, str], None]  # (key name, limit) of a refusal, for the metrics

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
CONCURRENT_RETRY_S = 1.0  # when a running transcription ends is unknown: a second, as OpenAI's SDKs would wait


class KeyLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One key's limits; 0 = unlimited."""

    requests_per_minute: int = 0
    audio_seconds_per_hour: float = 0.0
    audio_seconds_per_day: float = 0.0
    max_concurrent: int = 0
    max_queued_tasks: int = 0

    @property
    def unlimited(self) -> bool:
        return not any(msgspec.structs.astuple(self))


LIMIT_FIELDS = tuple(f.name for f in msgspec.structs.fields(KeyLimits))


def limits_table(defaults: KeyLimits, overrides: Mapping[str, object], names: Iterable[str],
                 variable: str = "FRONTEND_KEY_LIMITS") -> dict[str, KeyLimits]:
    """Each named key's limits: the defaults, with the fields `overrides[name]` gives replaced.

    A name that is not a configured key, an unknown field or a negative value fails (SettingsError naming
    `variable`), so a typo does not leave a key unlimited."""
    known = set(names)
    for name, value in msgspec.structs.asdict(defaults).items():
        if value < 0:
            raise SettingsError(f"Invalid value for FRONTEND_KEY_{name.upper()}: must be 0 (unlimited) or more.")
    table = {}
    for name, given in overrides.items():
        if name not in known:
            raise SettingsError(f"Invalid value for {variable}: no API key is named {name[:64]!r} "
                                f"(keys: {', '.join(sorted(known)) or 'none configured'}).")
        if not isinstance(given, Mapping):
            raise SettingsError(f"Invalid value for {variable}: {name!r} needs an object of limits.")
        unknown = sorted(set(given) - set(LIMIT_FIELDS))
        if unknown:
            raise SettingsError(f"Invalid value for {variable}: unknown limit {unknown[0]!r} for {name!r} "
                                f"(use {', '.join(LIMIT_FIELDS)}).")
        try:
            limits = msgspec.convert({**msgspec.structs.asdict(defaults), **given}, KeyLimits, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"Invalid value for {variable}: {name!r}: {exc}.") from exc
        if any(v < 0 for v in msgspec.structs.astuple(limits)):
            raise SettingsError(f"Invalid value for {variable}: {name!r}: limits are 0 (unlimited) or more.")
        table[name] = limits
    return table


def duration(seconds: float) -> str:
    """OpenAI's duration format of `x-ratelimit-reset-*`: `1s`, `6m0s`, `1h2m3s`, `59.5ms`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{_trim(round(seconds * 1000, 1))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{_trim(round(secs, 3))}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs_text}"
    if minutes:
        return f"{int(minutes)}m{secs_text}"
    return secs_text


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


class Bucket:
    """A token bucket of `capacity` refilled at `capacity / period_s` per second; its level may go below 0
    (audio counted after the fact), and nothing is taken while it holds less than one unit."""

    def __init__(self, capacity: float, period_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / period_s
        self.level = capacity
        self._at = now

    def refill(self, now: float) -> float:
        self.level = min(self.capacity, self.level + max(0.0, now - self._at) * self.rate)
        self._at = now
        return self.level

    @property
    def needed(self) -> float:
        return min(1.0, self.capacity)

    def wait_s(self, now: float) -> float:
        """Seconds until the bucket holds one unit again (0 if it does)."""
        return max(0.0, (self.needed - self.refill(now)) / self.rate)

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again (OpenAI's `x-ratelimit-reset-*`)."""
        return (self.capacity - self.refill(now)) / self.rate

    def take(self, now: float, amount: float) -> None:
        self.refill(now)
        self.level -= amount


@dataclass
class _KeyState:
    requests: Bucket | None
    audio_hour: Bucket | None
    audio_day: Bucket | None
    running: int = 0


@dataclass(frozen=True)
class _Budget:
    """How one limit shows in headers and in a refusal."""

    header: str  # x-ratelimit-*-<header>
    limit: str  # RateLimitError.limit and the metrics label
    what: str  # for the message


_REQUESTS = _Budget("requests", "requests", "requests per minute")
_AUDIO_HOUR = _Budget("audio-seconds", "audio_seconds_per_hour", "audio seconds per hour")
_AUDIO_DAY = _Budget("audio-seconds-day", "audio_seconds_per_day", "audio seconds per day")
_CONCURRENT = _Budget("concurrent", "concurrent", "concurrent transcriptions")


@dataclass
class Ticket:
    """A request admitted by its key's limits; `release` ends its concurrent transcription (once)."""

    _state: _KeyState | None
    headers: dict[str, str] = field(default_factory=dict)

    def release(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.running = max(0, state.running - 1)


class KeyLimiter:
    """The limits of every key of this replica, in memory."""

    def __init__(self, defaults: KeyLimits, per_key: Mapping[str, KeyLimits] | None = None,
                 clock: Clock = time.monotonic, on_refused: RefusedFn | None = None) -> None:
        self.defaults = defaults
        self.per_key = dict(per_key or {})
        self._clock = clock
        self._on_refused = on_refused
        self._states: dict[str, _KeyState] = {}

    def limits(self, principal: Principal) -> KeyLimits:
        if principal.key_id == ADMIN.key_id:
            return KeyLimits()
        return self.per_key.get(principal.name, self.defaults)

    def _state(self, principal: Principal) -> _KeyState | None:
        limits = self.limits(principal)
        if limits.unlimited:
            return None
        state = self._states.get(principal.name)
        if state is None:
            now = self._clock()

            def bucket(capacity: float, period: float) -> Bucket | None:
                return Bucket(capacity, period, now) if capacity > 0 else None

            state = _KeyState(bucket(limits.requests_per_minute, MINUTE), bucket(limits.audio_seconds_per_hour, HOUR),
                              bucket(limits.audio_seconds_per_day, DAY))
            self._states[principal.name] = state
        return state

    def admit(self, principal: Principal) -> Ticket:
        """Counts one request that starts a transcription: refused (RateLimitError) over a limit, else a
        ticket that holds one of the key's concurrent transcriptions until released."""
        self.check(principal, concurrent=True)
        state = self._state(principal)
        if state is None:
            return Ticket(None)
        if state.requests is not None:
            state.requests.take(self._clock(), 1)
        state.running += 1
        return Ticket(state, self.headers(principal))

    def count_request(self, principal: Principal) -> dict[str, str]:
        """Counts one request that queues work (a task): refused over the request or audio budgets."""
        self.check(principal, concurrent=False)
        state = self._state(principal)
        if state is not None and state.requests is not None:
            state.requests.take(self._clock(), 1)
        return self.headers(principal)

    def check(self, principal: Principal, concurrent: bool = True) -> None:
        state = self._state(principal)
        if state is None:
            return
        now = self._clock()
        for budget, bucket in ((_REQUESTS, state.requests), (_AUDIO_HOUR, state.audio_hour),
                               (_AUDIO_DAY, state.audio_day)):
            if bucket is not None and bucket.wait_s(now) > 0:
                self._refuse(principal, budget, bucket.wait_s(now), f"{bucket.capacity:g}")
        maximum = self.limits(principal).max_concurrent
        if concurrent and maximum and state.running >= maximum:
            self._refuse(principal, _CONCURRENT, CONCURRENT_RETRY_S, str(maximum))

    def _refuse(self, principal: Principal, budget: _Budget, wait_s: float, limit: str) -> None:
        if self._on_refused is not None:
            self._on_refused(principal.name, budget.limit)
        raise RateLimitError(f"Rate limit reached for key {principal.name!r} on {budget.what}: limit {limit}. "
                             f"Please try again in {duration(wait_s)}.", retry_after=wait_s, limit=budget.limit,
                             headers=self.headers(principal))

    def record_audio(self, principal: Principal, seconds: float) -> None:
        """Takes a finished transcription's audio from its key's budgets."""
        state = self._state(principal)
        if state is None or seconds <= 0:
            return
        now = self._clock()
        for bucket in (state.audio_hour, state.audio_day):
            if bucket is not None:
                bucket.take(now, seconds)

    def headers(self, principal: Principal) -> dict[str, str]:
        """The key's `x-ratelimit-*` headers (none for an unlimited key)."""
        state = self._state(principal)
        if state is None:
            return {}
        now = self._clock()
        headers: dict[str, str] = {}
        for budget, bucket in ((_REQUESTS, state.requests), (_AUDIO_HOUR, state.audio_hour),
                               (_AUDIO_DAY, state.audio_day)):
            if bucket is not None:
                headers |= {f"x-ratelimit-limit-{budget.header}": f"{bucket.capacity:g}",
                            f"x-ratelimit-remaining-{budget.header}": str(max(0, math.floor(bucket.refill(now)))),
                            f"x-ratelimit-reset-{budget.header}": duration(bucket.reset_s(now))}
        maximum = self.limits(principal).max_concurrent
        if maximum:
            headers |= {"x-ratelimit-limit-concurrent": str(maximum),
                        "x-ratelimit-remaining-concurrent": str(max(0, maximum - state.running))}
        return headers
