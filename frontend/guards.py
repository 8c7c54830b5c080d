"""Who may call the API: `Authorization: Bearer <key>` with an API key or the admin key, or `x-admin-api-key`.

The guard also says who is calling: `request.state.principal` (handlers take it as the `principal`
dependency), whose key id owns what the request creates and limits what it may see.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.status_codes import HTTP_403_FORBIDDEN

from frontend.errors import APIError, bad_request, unauthorized
from frontend.keys import ACT_AS_HEADER, OPEN, KeyRing, Principal


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    connection.state.principal = identify(connection)


def require_admin_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Routes for the operator only: the admin key (401 without a key, 403 with another one); open, like
    everything, when no key is configured."""
    principal = identify(connection)
    require_admin(principal)
    connection.state.principal = principal


def require_admin(principal: Principal, what: str = "use this endpoint") -> None:
    """403 unless the caller holds the admin key (or no key is configured): for a route, `require_admin_key`;
    for what only part of a route serves the operator."""
    if not principal.admin:
        raise APIError(HTTP_403_FORBIDDEN, f"Only the admin key may {what}.", code="forbidden")


def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of a request, or 401 when keys are configured and none of them was sent."""
    keys: KeyRing = connection.app.state["key_ring"]
    if not keys.enabled:
        return OPEN
    admin = connection.headers.get("x-admin-api-key", "").strip()
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if not admin and not bearer:
        raise unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    if admin and not keys.admin_matches(admin):
        raise unauthorized("The x-admin-api-key header does not match the admin key.")
    principal = keys.identify(admin or bearer)
    if principal is None:
        raise unauthorized()
    acting = connection.headers.get(ACT_AS_HEADER, "").strip()
    if not acting:
        return principal
    if not principal.admin:
        raise APIError(HTTP_403_FORBIDDEN, f"Only the admin key may send {ACT_AS_HEADER}.", code="forbidden")
    for_key = keys.act_as(acting)
    if for_key is None:
        raise bad_request(f"No API key is named {acting[:64]!r}.", param=ACT_AS_HEADER, code="unknown_key")
    return for_key


def provide_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The `principal` dependency: set by the guard; OPEN on routes without it when no key is configured."""
    principal = getattr(connection.state, "principal", None)
    return principal if principal is not None else identify(connection)
