"""The web page's models panel (frontend/static/models.js) in headless Chromium, on the real served stack: the
catalogue with states, a model fetched with a click (its state followed until it is there), then deleted."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.test_web_page import base_url, browser, page  # noqa: F401 (fixtures)


def test_the_models_panel_fetches_and_deletes_a_model(page: Page, base_url: str) -> None:  # noqa: F811
    try:
        page.locator("#models summary").click()
        default = page.locator('#model-list .model-row[data-model="tiny.en"]')
        expect(default).to_have_attribute("data-state", "loaded")
        expect(default.get_by_role("button")).to_have_count(0)  # the default model stays loaded
        base = page.locator('#model-list .model-row[data-model="base"]')
        expect(base).to_have_attribute("data-state", "not_downloaded")

        page.get_by_role("button", name="Fetch base", exact=True).click()
        expect(base).to_have_attribute("data-state", "available", timeout=120_000)
        expect(base.get_by_role("button", name="Load base")).to_be_visible()

        page.get_by_role("button", name="Delete base", exact=True).click()
        expect(base).to_have_attribute("data-state", "not_downloaded")
        expect(page.locator("#models-note")).to_contain_text("models")
    finally:  # the served stack is shared: leave the model cache as it was
        httpx.delete(f"{base_url}/v1/models/base", timeout=60)
