"""What both task dialects read from their requests the same way: languages, webhooks, body fields; and the
owner's name they show."""

from __future__ import annotations

import datetime
import json
from typing import Any

from litestar import Request
from litestar.datastructures import State

from frontend.errors import bad_request
from frontend.keys import KeyRing
from frontend.request_bodies import FormReader, read_json_object, read_multipart
from frontend.tasks.records import Task, Webhook
from whisper_triton.errors import InvalidRequestError
from whisper_triton.languages import normalize_language


def language(value: str | None) -> str | None:
    try:
        return normalize_language(value)
    except InvalidRequestError as exc:
        raise bad_request(exc.message, param="language") from exc


def webhook(url: str | None, headers: object) -> Webhook | None:
    if not url:
        return None
    if headers is None:
        headers = {}
    if isinstance(headers, str):
        try:
            headers = json.loads(headers) if headers.strip() else {}
        except json.JSONDecodeError:
            raise bad_request("Webhook headers must be a JSON object.", param="webhook") from None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise bad_request("Webhook headers must be an object of strings.", param="webhook")
    return Webhook(url=url, headers={str(k): v for k, v in headers.items()})


def query_and_form(request: Request[Any, Any, Any], fields: dict[str, list[str]]) -> FormReader:
    """The query parameters and the form fields (which win) together."""
    merged = {key: list(values) for key, values in request.query_params.dict().items()}
    merged.update(fields)
    return FormReader(merged)


async def body_fields(request: Request[Any, Any, Any], max_upload_bytes: int) -> dict[str, list[str]]:
    """The fields of a JSON, multipart or URL-encoded body."""
    media_type, _ = request.content_type
    if media_type == "application/json":
        body = await read_json_object(request)
        return {str(k): [v if isinstance(v, str) else json.dumps(v)] for k, v in body.items() if v is not None}
    if media_type == "multipart/form-data":
        fields, _ = await read_multipart(request, max_upload_bytes)
        return fields
    if media_type == "application/x-www-form-urlencoded":
        form = await request.form()
        return {key: [str(v) for v in form.getall(key)] for key in form}
    return {}


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


def owner_name(state: State, task: Task) -> str | None:
    """The name of the key that owns a task, for its views (only its owner and the admin see the task); None
    with no keys configured (there is one user)."""
    keys: KeyRing = state["key_ring"]
    return keys.name_of(task.owner) if keys.enabled else None
