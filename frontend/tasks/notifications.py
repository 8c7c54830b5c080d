"""Webhooks of ended tasks: signed with the frontend's secret, their delivery recorded on the task."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from frontend.net import UrlPolicy
from frontend.tasks.records import Task, short_id
from frontend.tasks.runner import NotifyFn
from frontend.tasks.store import TaskStore
from frontend.webhooks import Delivery, deliver

log = logging.getLogger("frontend.tasks")

PayloadFn = Callable[[Task], dict[str, Any]]  # what a task's webhook says (its dialect's shape)


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


def webhook_notifier(store: TaskStore, payload: PayloadFn, secret: bytes, policy: UrlPolicy,
                     attempts: int) -> NotifyFn:
    async def notify(task: Task) -> None:
        webhook = task.request.webhook
        if webhook is None:
            return

        async def record(delivery: Delivery) -> None:
            await store.set_webhook(task.id, msgspec.to_builtins(delivery))

        delivery = await deliver(webhook.url, payload(task), dict(webhook.headers), secret, policy,
                                 attempts=attempts, on_attempt=record)
        await record(delivery)
        log.info("webhook of task %s: %s after %d attempt(s)", short_id(task.id), delivery.state, delivery.attempts)

    return notify
