"""The `x-ratelimit-*` headers of a limited key on every answer it gets, as OpenAI sends them.

A refusal (429) carries the headers of the moment it was refused (`RateLimitError.headers`); every other
answer to a key with limits carries the state of its limits when the answer starts, after what the request
itself used (a request, a concurrent transcription; the audio of a finished synchronous transcription).
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from frontend.keys import Principal
from frontend.limits import KeyLimiter


class RateLimitHeaders(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, limiter: KeyLimiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                principal = (scope.get("state") or {}).get("principal")
                headers = list(message.get("headers") or [])
                if isinstance(principal, Principal) and not any(name.startswith(b"x-ratelimit-")
                                                                for name, _ in headers):
                    added = self.limiter.headers(principal)
                    if added:
                        headers += [(k.encode(), v.encode()) for k, v in added.items()]
                        message = {**message, "headers": headers}
            await send(message)

        await next_app(scope, receive, send_with_headers)
