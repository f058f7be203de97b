"""API answers hold personal data (a profile, an export, an inbox) or tokens: no browser or
proxy may keep them (``Cache-Control: no-store``; RFC 6749 5.1 requires it of token
responses). A route that may be cached says so with its own ``Cache-Control``."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CACHE_CONTROL = b"cache-control"
_NO_STORE = (_CACHE_CONTROL, b"no-store")


class NoStoreMiddleware:
    """Pure ASGI: adds ``Cache-Control: no-store`` to a response that sets none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_not_stored(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _CACHE_CONTROL for name, _ in headers):
                    message = {**message, "headers": [*headers, _NO_STORE]}
            await send(message)

        await self.app(scope, receive, send_not_stored)
