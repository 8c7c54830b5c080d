"""Who may call the API: `Authorization: Bearer <key>` with an API key or the admin key, or `x-admin-api-key`."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from frontend.errors import unauthorized
from frontend.settings import FrontendSettings


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    settings: FrontendSettings = connection.app.state.settings
    if not settings.auth_enabled:
        return
    keys = [*settings.api_keys, *([settings.admin_api_key] if settings.admin_api_key else [])]
    admin = connection.headers.get("x-admin-api-key", "").strip()
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    candidates = [c for c in (admin, token.strip() if scheme.lower() == "bearer" else "") if c]
    if not candidates:
        raise unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    # Compare with every key, always, so the time taken does not reveal which one matched.
    matches = [hmac.compare_digest(c.encode(), key.encode()) for c in candidates for key in keys]
    if admin and not (settings.admin_api_key and hmac.compare_digest(admin.encode(), settings.admin_api_key.encode())):
        raise unauthorized("The x-admin-api-key header does not match the admin key.")
    if not any(matches):
        raise unauthorized()
