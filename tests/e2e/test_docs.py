"""Swagger UI and the OpenAPI document."""

from __future__ import annotations

import httpx

from harness.stack import Served


def test_swagger_ui_and_openapi_document(served: Served) -> None:
    page = httpx.get(f"{served.base_url}/docs", timeout=30)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    document = httpx.get(f"{served.base_url}/docs/openapi.json", timeout=30).json()
    paths = document["paths"]
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/health/ready"):
        assert path in paths
    transcription = paths["/v1/audio/transcriptions"]["post"]
    assert transcription["operationId"] == "createTranscription"
    body = transcription["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["required"]) == {"file", "model"}
    assert "timestamp_granularities[]" in body["properties"]
    assert {"400", "401", "404", "413", "503"} <= set(transcription["responses"])
