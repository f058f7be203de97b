"""Each HTTP request's work runs under a trace id: the gateway's ``X-Request-Id`` when it
is a W3C trace id, else a new one (``shared.tracing``). Log lines, problem bodies and the
events the request queues carry it."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.tracing import trace_id_for_request, working_on

_HEADER = b"x-request-id"
# Under /api/, but not a service's probes (/api/<service>/healthz, /readyz).
_TRACED = re.compile(r"/api/(?![^/]+/+(?:healthz|readyz)/*$)")


class RequestTraceMiddleware:
    """Pure ASGI, outermost: sets the trace id for everything the request runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only API requests: a probe or a scrape is no one's work, and what it starts
        # (the scrape's Kafka client, a readiness check's connections) outlives it.
        if scope["type"] != "http" or not _TRACED.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == _HEADER), None)
        with working_on(trace_id_for_request(sent.decode("latin-1") if sent else None)):
            await self.app(scope, receive, send)
