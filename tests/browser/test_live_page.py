"""The web page's live mode: the microphone transcribed through `/v1/realtime?intent=transcription`,
driven in headless Chromium (Debian's, through Playwright, as in test_web_page.py) whose fake microphone
plays JFK's speech from a WAV file. The page runs against the real server of the `served` fixture
(Triton + tiny.en) and against second frontends on it, with API keys or a short maximum session.
"""

from __future__ import annotations

import base64
import json
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, WebSocket, expect, sync_playwright
from scipy.signal import resample_poly

from harness.assets import jfk_wav
from harness.stack import Served, run_frontend
from tests.browser.test_web_page import CHROMIUM, CHROMIUM_ARGS, JFK_PHRASE, words_only
from whisper_triton.audio import decode_audio

MIC_RATE = 48_000
LIVE_TIMEOUT_MS = 45_000  # the fake microphone loops every 17 s: two loops and the transcription
CHUNK_BYTES = 4800  # 100 ms of 24 kHz 16-bit PCM
SCREENSHOT = Path("/tmp/web_page_live.png")
PHONE_SCREENSHOT = Path("/tmp/web_page_live_phone.png")
# A browser without 24 kHz AudioContexts (Firefox refuses a microphone at another rate than its own):
# the page's worklet then resamples the device's rate to 24 kHz.
NO_24K_CONTEXT = """
    const Native = window.AudioContext;
    window.audioRates = [];
    window.AudioContext = class extends Native {
        constructor(options) {
            if (options && options.sampleRate) throw new DOMException("no such rate", "NotSupportedError");
            super(options);
            window.audioRates.push(this.sampleRate);
        }
    };
"""
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def fake_microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JFK at 48 kHz, 16-bit PCM, between 1 s and 5 s of silence: Chromium's fake capture loops the file,
    and the trailing silence lets server_vad end the turn."""
    speech = resample_poly(decode_audio(jfk_wav().read_bytes()).samples, MIC_RATE // 16_000, 1)
    samples = np.concatenate([np.zeros(MIC_RATE), speech, np.zeros(5 * MIC_RATE)])
    path = tmp_path_factory.mktemp("microphone") / "jfk_48k.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def browser(fake_microphone: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set $CHROMIUM)")
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_microphone}"]
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield instance
        instance.close()


class LivePage:
    """The page, its uncaught errors, the frames of its realtime WebSockets, and the states each live line
    went through (recorded in the page as they change)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.sockets: list[WebSocket] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("websocket", self._socket)

    def _socket(self, socket: WebSocket) -> None:
        if "/v1/realtime" in socket.url:
            self.sockets.append(socket)
            socket.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
            socket.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def open(self, key: str | None = None, init_script: str | None = None) -> None:
        if init_script:
            self.page.add_init_script(init_script)
        self.page.goto("/", wait_until="networkidle")  # a refused key opens the key panel by itself
        self.page.evaluate("""() => {
            window.liveStates = {};
            const lines = document.getElementById("live-lines");
            new MutationObserver(() => {
                for (const line of lines.children) {
                    const seen = (window.liveStates[line.dataset.item] ||= []);
                    if (seen.at(-1) !== line.dataset.state) seen.push(line.dataset.state);
                }
            }).observe(lines, {subtree: true, childList: true, attributes: true, characterData: true});
        }""")
        if key is not None:  # as a user does: the "API key" panel in the header
            if self.page.locator("#api-key-panel").get_attribute("open") is None:
                self.page.locator("#api-key-panel summary").click()
            self.page.get_by_label("Bearer key for this server").fill(key)
            # The page tries the key on the model list and the task list, and opens the panel again when either
            # refuses it: wait for both answers (the page's load state went idle long ago, so waiting for it
            # again returns at once, and a refusal arriving after the check reopened the panel over the button).
            panel = self.page.locator("#api-key-panel")
            with self.page.expect_response(lambda response: response.url.endswith("/v1/models")) as models:
                self.page.get_by_role("button", name="Save", exact=True).click()
            expect(self.page.locator("#api-key-state")).to_have_text("saved")
            if models.value.status == 401:
                expect(panel).to_have_attribute("open", "")
            expect(self.page.locator("#tasks")).not_to_have_attribute("aria-busy", "true")
            if panel.get_attribute("open") is not None:  # the key was refused
                self.page.locator("#api-key-panel summary").click()
                expect(panel).not_to_have_attribute("open", "")

    @property
    def button(self) -> Any:
        return self.page.get_by_role("button", name="Start live")

    def start(self) -> None:
        self.button.click()
        expect(self.page.locator("#live-btn")).to_have_attribute("aria-pressed", "true")

    def stop(self) -> None:
        self.page.get_by_role("button", name="Stop live").click()
        expect(self.page.locator("#live-state")).to_have_attribute("data-state", "idle", timeout=15_000)

    def final_text(self) -> str:
        return words_only(" ".join(self.page.locator('#live-lines li[data-state="final"]').all_inner_texts()))

    def wait_for_phrase(self) -> None:
        expect(self.page.locator('#live-lines li[data-state="final"]').first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
        self.page.wait_for_function(f"""() => {{
            const text = [...document.querySelectorAll('#live-lines li[data-state="final"]')]
                .map((line) => line.innerText).join(" ").toLowerCase().replace(/[^\\w\\s']/g, " ");
            return text.split(/\\s+/).join(" ").includes({json.dumps(JFK_PHRASE)});
        }}""", timeout=LIVE_TIMEOUT_MS)

    def states(self) -> dict[str, list[str]]:
        states: dict[str, list[str]] = self.page.evaluate("() => window.liveStates")
        return states

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.received if event.get("type") == kind]


@pytest.fixture
def live_page(browser: Browser) -> Iterator[Callable[..., LivePage]]:
    contexts = []
    pages: list[LivePage] = []

    def open_at(url: str, viewport: ViewportSize = DESKTOP) -> LivePage:
        context = browser.new_context(base_url=url, viewport=viewport)
        context.grant_permissions(["microphone"], origin=url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        pages.append(LivePage(page))
        return pages[-1]

    yield open_at
    for context in contexts:
        context.close()
    for page in pages:
        assert not page.errors, f"uncaught JavaScript errors: {page.errors}"


@pytest.fixture(scope="module")
def keyed(served: Served) -> Iterator[str]:
    with run_frontend(served, api_keys=["alice:key-a"]) as url:
        yield url


@pytest.fixture(scope="module")
def short_sessions(served: Served) -> Iterator[str]:
    with run_frontend(served, realtime_max_session_s=4.0) as url:
        yield url


def test_live_transcribes_the_microphone(served: Served, live_page: Callable[..., LivePage]) -> None:
    live = live_page(served.base_url)
    live.open()
    page = live.page
    expect(page.locator("#model option").first).to_contain_text("(served)")
    page.get_by_label("Language").select_option("en")
    live.start()
    expect(page.locator("#live-state")).to_have_text("Listening")
    live.wait_for_phrase()
    live.stop()

    expect(page.locator("#live-error")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    assert JFK_PHRASE in live.final_text()
    assert live.sockets and all(socket.is_closed() for socket in live.sockets)

    # The first event sets the session up: the page's model and language, 24 kHz PCM, server_vad.
    assert live.sent[0] == {"type": "session.update", "event_id": "live-session-update", "session": {
        "type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "tiny.en", "language": "en"},
            "turn_detection": {"type": "server_vad"}}}}}
    appends = [base64.b64decode(e["audio"]) for e in live.sent if e["type"] == "input_audio_buffer.append"]
    assert len(appends) >= 50  # the phrase takes 5 s at least
    assert sum(len(a) == CHUNK_BYTES for a in appends) >= len(appends) - 2  # ~100 ms each
    assert not live.of_type("error") and live.of_type("session.updated")
    pcm = np.frombuffer(b"".join(appends), "<i2")
    assert np.abs(pcm).max() > 3000  # speech, not silence

    # A line per turn: "…" while spoken (speech_started), the deltas, then the completed transcript.
    completed = live.of_type("conversation.item.input_audio_transcription.completed")
    lines = page.locator("#live-lines li")
    assert lines.count() == len({e["item_id"] for e in live.of_type("input_audio_buffer.speech_started")})
    states = live.states()
    for event in completed:
        line = page.locator(f'#live-lines li[data-item="{event["item_id"]}"]')
        expect(line).to_have_attribute("data-state", "final")
        assert words_only(line.inner_text()) == words_only(event["transcript"]) or not event["transcript"].strip()
        seen = states[event["item_id"]]
        assert seen[0] == "speaking" and seen[-1] == "final", seen
        if any(e["item_id"] == event["item_id"] and e["delta"].strip()
               for e in live.of_type("conversation.item.input_audio_transcription.delta")):
            assert "partial" in seen, seen
    assert page.locator("#live-lines li .live-text:not([aria-hidden])").count() >= len(completed)
    assert page.locator('#live-lines li[data-state="failed"]').count() == 0
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_live_with_an_api_key_on_a_phone_resampling_in_the_worklet(keyed: str,
                                                                  live_page: Callable[..., LivePage]) -> None:
    live = live_page(keyed, PHONE)
    live.open(key="key-a", init_script=NO_24K_CONTEXT)
    page = live.page
    expect(page.locator("#model option").first).to_contain_text("(served)")  # the key lists the models
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is wider than a phone: {width}"
    live.start()
    live.wait_for_phrase()
    live.stop()
    expect(page.locator("#live-error")).to_be_hidden()
    assert live.sent[0]["session"]["audio"]["input"]["transcription"] == {"model": "tiny.en"}
    rates = page.evaluate("() => window.audioRates")
    assert rates and all(rate != 24000 for rate in rates), rates  # so the worklet resampled
    appends = [base64.b64decode(e["audio"]) for e in live.sent if e["type"] == "input_audio_buffer.append"]
    assert sum(len(a) == CHUNK_BYTES for a in appends) >= len(appends) - 2  # still 100 ms of 24 kHz each
    assert not live.of_type("error")
    page.screenshot(path=str(PHONE_SCREENSHOT), full_page=True)


def test_live_with_a_wrong_key_shows_the_key_error(keyed: str, live_page: Callable[..., LivePage]) -> None:
    live = live_page(keyed)
    live.open(key="not-a-key")
    page = live.page
    live.button.click()
    alert = page.locator("#live-error")
    expect(alert).to_be_visible()
    expect(page.locator("#live-error-title")).to_have_text("API key refused")
    expect(page.locator("#live-error-message")).to_contain_text("Incorrect API key")
    expect(page.locator("#live-error-meta")).to_contain_text("3000")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "idle")
    expect(page.locator("#api-key-panel")).to_have_attribute("open", "")
    assert page.locator("#live-lines li").count() == 0
    assert [e["error"]["code"] for e in live.of_type("error")] == ["invalid_api_key"]


def test_an_expired_session_is_shown(short_sessions: str, live_page: Callable[..., LivePage]) -> None:
    live = live_page(short_sessions)
    live.open()
    live.start()
    page = live.page
    expect(page.locator("#live-error-title")).to_have_text("Live session expired", timeout=15_000)
    expect(page.locator("#live-error-meta")).to_contain_text("1001")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "idle")
    expect(page.get_by_role("button", name="Start live")).to_be_enabled()
