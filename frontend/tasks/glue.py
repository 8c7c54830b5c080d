"""What the task runner needs from the outside world: audio from URLs, webhook deliveries."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import msgspec

from frontend.net import FetchError, UnsafeUrlError, UrlPolicy, fetch
from frontend.tasks.model import Task, short_id
from frontend.tasks.store import TaskStore
from frontend.webhooks import Delivery, deliver
from whisper_triton.errors import FetchFailedError

log = logging.getLogger("frontend.tasks")


def url_fetcher(policy: UrlPolicy) -> Any:
    async def fetch_audio(url: str) -> bytes:
        try:
            return await fetch(url, policy)
        except (UnsafeUrlError, FetchError) as exc:
            raise FetchFailedError(f"Could not fetch the audio: {exc}", param="url") from exc

    return fetch_audio


def webhook_secret(configured: str, data_dir: Path) -> bytes:
    """The HMAC key: configured, or generated once and kept in the data directory."""
    if configured:
        return configured.encode()
    path = data_dir / "webhook_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
        log.warning("no WEBHOOK_SECRET set: webhooks are signed with a generated key kept in %s", path)
    return path.read_text(encoding="utf-8").strip().encode()


def webhook_payload(task: Task) -> dict[str, Any]:
    from frontend.tasks.api import ifw_output, task_view

    if task.request.dialect == "ifw":
        payload: dict[str, Any] = {"task_id": task.id, "status": task.status}
        if task.status == "completed":
            payload["output"] = ifw_output(task)
        if task.error is not None:
            payload["error"] = task.error.message
        return payload
    return task_view(task)


def webhook_notifier(store: TaskStore, secret: bytes, policy: UrlPolicy, attempts: int) -> Any:
    async def notify(task: Task) -> None:
        webhook = task.request.webhook
        if webhook is None:
            return

        async def record(delivery: Delivery) -> None:
            await store.set_webhook(task.id, msgspec.to_builtins(delivery))

        delivery = await deliver(webhook.url, webhook_payload(task), dict(webhook.headers), secret, policy,
                                 attempts=attempts, on_attempt=record)
        await record(delivery)
        log.info("webhook of task %s: %s after %d attempt(s)", short_id(task.id), delivery.state, delivery.attempts)

    return notify
