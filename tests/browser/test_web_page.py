"""The web page at `/` (frontend/static), driven in headless Chromium by Playwright.

Debian's Chromium (`apt-get install chromium`) is launched through Playwright for Python; Playwright's
own browser download (`playwright install`) is never used, so the test works offline. The page runs
against the real server of the `served` fixture (Triton + tiny.en), or against any running server whose
URL is in $WEB_PAGE_BASE_URL (e.g. `make serve`: WEB_PAGE_BASE_URL=http://127.0.0.1:8000).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from harness.assets import jfk_wav

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # A synthetic microphone (a beeping tone) that needs no permission prompt, for the recorder.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
SCREENSHOT = Path("/tmp/web_page.png")
ERROR_SCREENSHOT = Path("/tmp/web_page_error.png")
TRANSCRIPTION_TIMEOUT_MS = 120_000
JFK_PHRASE = "ask not what your country can do for you"
SEGMENT_TIME = re.compile(r"^\d{2,}:\d{2}\.\d – \d{2,}:\d{2}\.\d$")  # mm:ss.s – mm:ss.s
SRT_CUE = re.compile(r"^1\r?\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\r?\n[^\n]*\w", re.M)


def words_only(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest.fixture(scope="module")
def base_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("WEB_PAGE_BASE_URL") or request.getfixturevalue("served").base_url
    url = url.rstrip("/")
    page = httpx.get(f"{url}/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers.get("content-type", ""), (
        f"GET / should serve frontend/static/index.html, got {page.status_code} {page.text[:300]}")
    if httpx.get(f"{url}/task/all", timeout=30).status_code == 404:
        pytest.skip("the task API (/speech-to-text, /task/...) is not served yet")
    return url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set $CHROMIUM)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    context.grant_permissions(["microphone"], origin=base_url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/")
    # The model list comes from GET /v1/models: the served model is first and selected.
    expect(page.locator("#model option").first).to_contain_text("(served)")
    yield page
    context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


def test_upload_transcribe_list_and_download(page: Page) -> None:
    page.set_input_files("#file-input", jfk_wav())
    expect(page.locator("#selected-name")).to_have_text("jfk.wav")
    page.get_by_label("Word timestamps").check()
    page.get_by_role("button", name="Transcribe", exact=True).click()

    result = page.locator("#result")
    expect(result).to_be_visible(timeout=TRANSCRIPTION_TIMEOUT_MS)
    expect(page.locator("#error")).to_be_hidden()
    assert JFK_PHRASE in words_only(page.locator("#transcript").inner_text())

    times = page.locator("#segments .seg-time").all_inner_texts()
    assert times and all(SEGMENT_TIME.match(t.strip()) for t in times), times
    assert times[0].startswith("00:0"), times
    assert page.locator("#segments .word").count() >= 10  # word timestamps were asked for

    # The finished task is in the recent list, marked as the one shown.
    current = page.locator('#tasks .task[aria-current="true"]')
    expect(current).to_contain_text("jfk.wav")
    expect(current).to_have_attribute("data-status", "completed")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="srt", exact=True).click()
    download = download_info.value
    assert download.suggested_filename.endswith(".srt")
    srt = Path(download.path()).read_text(encoding="utf-8-sig")
    assert SRT_CUE.search(srt), srt[:300]
    assert JFK_PHRASE in words_only(srt)

    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_api_error_is_shown(page: Page) -> None:
    # Dropped (drag and drop) rather than chosen: a text file is no audio.
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["these are words, not sound\\n"], "notes.txt", {type: "text/plain"}));
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
        }
    }""")
    expect(page.locator("#selected-name")).to_have_text("notes.txt")
    page.get_by_role("button", name="Transcribe", exact=True).click()

    # Refused at upload (400) or accepted and then failed: either way the reason is on the page.
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible(timeout=60_000)
    message = page.locator("#error-message").inner_text().strip()
    assert message and "traceback" not in message.lower() and "{" not in message, message
    expect(page.locator("#result")).to_be_hidden()
    alert.screenshot(path=str(ERROR_SCREENSHOT))


def test_recording_is_uploaded_as_webm(page: Page) -> None:
    record = page.locator("#record-btn")
    record.click()
    expect(record).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(2000)
    record.click()
    expect(page.locator("#selected-name")).to_have_text("recording.webm")
    page.get_by_role("button", name="Transcribe", exact=True).click()
    # The fake microphone plays a tone, not speech: what matters is that the server decodes the
    # browser's WebM/Opus and the task completes.
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator('#tasks .task[aria-current="true"]')).to_contain_text("recording.webm")


def test_a_refresh_asked_while_the_task_list_loads_is_not_lost(page: Page, base_url: str) -> None:
    # A task the server holds, named so that the list can be checked for it.
    submitted = httpx.post(f"{base_url}/speech-to-text", files={"file": ("refresh-race.wav", jfk_wav().read_bytes())},
                           timeout=60)
    assert submitted.status_code == 200, submitted.text
    task = f"{base_url}/task/{submitted.json()['identifier']}"
    deadline = time.monotonic() + 120
    while httpx.get(task, timeout=30).json()["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, "the task did not end"
        time.sleep(0.5)
    # Loaded with no task running, the page does not refresh the list on its own any more.
    page.locator("#tasks-refresh").click()
    expect(page.locator("#tasks")).to_contain_text("refresh-race.wav")
    expect(page.locator("#tasks")).not_to_have_attribute("aria-busy", "true")

    # The next answer of the task list is held: the page is loading it when asked to refresh again.
    held: list[Route] = []
    asked: list[str] = []

    def hold_first(route: Route) -> None:
        asked.append(route.request.url)
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/task/all", hold_first)
    refresh = page.locator("#tasks-refresh")
    refresh.click()
    expect(page.locator("#tasks")).to_have_attribute("aria-busy", "true")
    refresh.click()  # (a key saved, a task submitted, cancelled or deleted meanwhile)
    assert len(held) == 1
    # The held answer predates the change: an empty list. The page drops it and asks once more.
    held[0].fulfill(status=200, content_type="application/json", body='{"tasks": []}')
    expect(page.locator("#tasks")).to_contain_text("refresh-race.wav")
    expect(page.locator("#tasks")).not_to_have_attribute("aria-busy", "true")
    assert len(asked) == 2
