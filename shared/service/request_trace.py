"""Each HTTP request's work runs under a trace id: the gateway's ``X-Request-Id`` when it
is a W3C trace id, else a new one (``shared.tracing``). Log lines, problem bodies and the
events the request queues carry it."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.tracing import trace_id_for_request, trace_id_var

_HEADER = b"x-request-id"


class RequestTraceMiddleware:
    """Pure ASGI, outermost: sets the trace id for everything the request runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only API requests: a probe or a scrape (/metrics, /healthz at the root) is no
        # one's work, and what it starts (the scrape's Kafka client, say) outlives it.
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == _HEADER), None)
        token = trace_id_var.set(trace_id_for_request(sent.decode("latin-1") if sent else None))
        try:
            await self.app(scope, receive, send)
        finally:
            trace_id_var.reset(token)
