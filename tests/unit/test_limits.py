"""Per-key limits (frontend.limits) with a fake clock: requests per minute, audio seconds per hour and per
day, concurrent transcriptions, the x-ratelimit-* headers, and the settings that configure them."""

from __future__ import annotations

import pytest

from frontend.keys import ADMIN, OPEN, Principal
from frontend.limits import KeyLimiter, KeyLimits, duration, limits_table
from frontend.settings import FrontendSettings, frontend_settings
from whisper_triton.errors import RateLimitError
from whisper_triton.settings import SettingsError

ALICE = Principal(key_id="a" * 16, name="alice")
BOB = Principal(key_id="b" * 16, name="bob")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(defaults: KeyLimits, per_key: dict[str, KeyLimits] | None = None) -> tuple[KeyLimiter, Clock, list]:
    clock, refused = Clock(), []
    return KeyLimiter(defaults, per_key, clock=clock, on_refused=lambda *r: refused.append(r)), clock, refused


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0595, "59.5ms"), (0.5, "500ms"), (1, "1s"), (1.5, "1.5s"), (59.999, "59.999s"), (60, "1m0s"),
    (360, "6m0s"), (3723, "1h2m3s"), (86400, "24h0m0s"),
])
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_requests_per_minute_refill_continuously_and_say_when() -> None:
    limits, clock, refused = limiter(KeyLimits(requests_per_minute=3))
    tickets = [limits.admit(ALICE) for _ in range(3)]
    assert tickets[-1].headers == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
                                   "x-ratelimit-reset-requests": "1m0s"}
    with pytest.raises(RateLimitError) as refusal:
        limits.admit(ALICE)
    assert refusal.value.limit == "requests" and refusal.value.retry_after == pytest.approx(20.0)
    assert refusal.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert "alice" in refusal.value.message and "20s" in refusal.value.message
    assert refused == [("alice", "requests")]
    limits.admit(BOB)  # another key is not affected
    clock.now += 19.9
    with pytest.raises(RateLimitError) as refusal:
        limits.admit(ALICE)
    assert refusal.value.retry_after == pytest.approx(0.1)
    clock.now += 0.1  # one request a 20 s
    limits.admit(ALICE)
    with pytest.raises(RateLimitError):
        limits.admit(ALICE)
    clock.now += 600
    assert limits.headers(ALICE)["x-ratelimit-remaining-requests"] == "3"  # full again, never more


def test_the_audio_budget_is_spent_by_finished_transcriptions() -> None:
    limits, clock, _ = limiter(KeyLimits(audio_seconds_per_hour=60, audio_seconds_per_day=100))
    limits.admit(ALICE).release()
    limits.record_audio(ALICE, 50)
    headers = limits.headers(ALICE)
    assert headers["x-ratelimit-remaining-audio-seconds"] == "10"
    assert headers["x-ratelimit-remaining-audio-seconds-day"] == "50"
    assert headers["x-ratelimit-reset-audio-seconds"] == "50m0s"  # 60 s an hour: one a minute
    limits.admit(ALICE).release()  # 10 s left: the request runs, and may spend more than is left
    limits.record_audio(ALICE, 40)
    with pytest.raises(RateLimitError) as refusal:
        limits.admit(ALICE)
    # 30 s overdrawn: 31 minutes until one second is back in the hour's bucket
    assert refusal.value.limit == "audio_seconds_per_hour"
    assert refusal.value.retry_after == pytest.approx(31 * 60)
    assert refusal.value.headers["x-ratelimit-remaining-audio-seconds"] == "0"
    clock.now += 31 * 60
    limits.admit(ALICE).release()
    limits.record_audio(ALICE, 20)
    clock.now += 3600  # the hour's budget is back; the day's (100 s a day) is still overdrawn
    with pytest.raises(RateLimitError) as refusal:
        limits.admit(ALICE)
    assert refusal.value.limit == "audio_seconds_per_day"
    assert 0 < refusal.value.retry_after < 86400
    limits.admit(BOB).release()


def test_concurrent_transcriptions_are_counted_until_released() -> None:
    limits, _, refused = limiter(KeyLimits(max_concurrent=2))
    first, second = limits.admit(ALICE), limits.admit(ALICE)
    assert second.headers == {"x-ratelimit-limit-concurrent": "2", "x-ratelimit-remaining-concurrent": "0"}
    with pytest.raises(RateLimitError) as refusal:
        limits.admit(ALICE)
    assert refusal.value.limit == "concurrent" and refusal.value.retry_after == 1.0
    first.release()
    first.release()  # once only
    third = limits.admit(ALICE)
    with pytest.raises(RateLimitError):
        limits.admit(ALICE)
    second.release()
    third.release()
    assert limits.headers(ALICE)["x-ratelimit-remaining-concurrent"] == "2"
    assert refused == [("alice", "concurrent")] * 2
    limits.count_request(ALICE)  # a task does not hold a concurrent transcription


def test_per_key_values_replace_the_defaults_and_the_admin_is_never_limited() -> None:
    limits, _, _ = limiter(KeyLimits(requests_per_minute=1), {"bob": KeyLimits(requests_per_minute=100)})
    limits.admit(ALICE)
    with pytest.raises(RateLimitError):
        limits.admit(ALICE)
    for _ in range(50):
        limits.admit(BOB)
    for _ in range(50):
        assert limits.admit(ADMIN).headers == {}
    assert limits.headers(ADMIN) == {}
    limits.admit(OPEN)  # no keys configured: the one caller gets the defaults
    with pytest.raises(RateLimitError):
        limits.admit(OPEN)


def test_an_unlimited_key_gets_no_headers() -> None:
    limits, _, _ = limiter(KeyLimits())
    for _ in range(1000):
        assert limits.admit(ALICE).headers == {}
    limits.record_audio(ALICE, 1e9)
    limits.admit(ALICE)


def test_the_table_of_limits_names_what_is_wrong() -> None:
    defaults = KeyLimits(requests_per_minute=10)
    table = limits_table(defaults, {"alice": {"max_concurrent": 2}}, ["alice", "bob"])
    assert table == {"alice": KeyLimits(requests_per_minute=10, max_concurrent=2)}
    for overrides, words in [({"carol": {}}, "no API key is named 'carol'"),
                             ({"alice": {"rpm": 1}}, "unknown limit 'rpm'"),
                             ({"alice": 5}, "needs an object"),
                             ({"alice": {"requests_per_minute": -1}}, "0 (unlimited) or more")]:
        with pytest.raises(SettingsError, match="FRONTEND_KEY_LIMITS") as error:
            limits_table(defaults, overrides, ["alice", "bob"])
        assert words in str(error.value)


def test_limits_from_the_environment() -> None:
    env = {"FRONTEND_API_KEYS": "alice:k-1,bob:k-2", "FRONTEND_KEY_REQUESTS_PER_MINUTE": "60",
           "FRONTEND_KEY_AUDIO_SECONDS_PER_HOUR": "3600", "FRONTEND_KEY_MAX_CONCURRENT": "4",
           "FRONTEND_KEY_MAX_QUEUED_TASKS": "5", "FRONTEND_KEY_LIMITS": '{"alice": {"requests_per_minute": 600}}'}
    settings = frontend_settings(env)
    assert settings.key_max_queued_tasks == 5
    assert settings.default_key_limits == KeyLimits(requests_per_minute=60, audio_seconds_per_hour=3600,
                                                    max_concurrent=4, max_queued_tasks=5)
    assert settings.key_limits_table()["alice"].requests_per_minute == 600
    assert settings.key_limits_table()["alice"].max_concurrent == 4
    for name, value in [("FRONTEND_KEY_LIMITS", '{"carol": {"max_concurrent": 1}}'),
                        ("FRONTEND_KEY_LIMITS", "alice=5"),
                        ("FRONTEND_KEY_REQUESTS_PER_MINUTE", "-1"),
                        ("FRONTEND_KEY_MAX_CONCURRENT", "many")]:
        with pytest.raises(SettingsError, match=name):
            frontend_settings({**env, name: value})


def test_every_key_is_unlimited_by_default() -> None:
    settings = FrontendSettings()
    assert settings.default_key_limits.unlimited and settings.key_limits_table() == {}


def test_one_keys_limits_by_name() -> None:
    settings = FrontendSettings(api_keys=["alice:k-1", "bob:k-2"], key_max_queued_tasks=3,
                                key_limits={"alice": {"max_queued_tasks": 10}})
    assert settings.key_limits_for("alice").max_queued_tasks == 10
    assert settings.key_limits_for("bob").max_queued_tasks == 3
