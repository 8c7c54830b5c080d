"""Frontend settings read only through the settings struct."""

from __future__ import annotations

from frontend.settings import frontend_settings


def test_the_triton_that_serve_starts_is_the_default_unless_one_is_set() -> None:
    assert frontend_settings({}).triton_url == "127.0.0.1:8001"
    assert frontend_settings({}, triton_url="127.0.0.1:9001").triton_url == "127.0.0.1:9001"
    chosen = {"FRONTEND_TRITON_URL": "triton:8001"}
    assert frontend_settings(chosen, triton_url="127.0.0.1:9001").triton_url == "triton:8001"
