"""The HTTP conventions of every service API.

Routes live under ``/api/<service>/`` (the gateway forwards that prefix unchanged);
``/api/<service>/healthz`` and ``/readyz`` answer through the gateway, ``/metrics``
only on the service's own port (never routed by the gateway). Errors are RFC 9457
problem bodies; request metrics are labelled by route template, never by raw path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

import uvicorn
from fastapi import APIRouter, FastAPI

from shared.observability import (
    Metrics,
    MetricsMiddleware,
    ReadinessCheck,
    configure_logging,
    health_router,
    install_problem_handlers,
)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_api(
    *,
    service: str,
    title: str,
    version: str,
    routers: Sequence[APIRouter],
    lifespan: Lifespan,
    readiness: Callable[[], Mapping[str, ReadinessCheck]],
    metrics: Metrics,
) -> FastAPI:
    """A FastAPI app with the platform's health, metrics and error conventions."""
    prefix = f"/api/{service}"
    app = FastAPI(
        title=title,
        version=version,
        lifespan=lifespan,
        openapi_url=f"{prefix}/openapi.json",
        # FastAPI's docs pages load Swagger UI from a CDN: a third-party resource, which
        # the platform's pages never load (P-21). The OpenAPI document itself is served.
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for router in routers:
        app.include_router(router, prefix=prefix)
    app.include_router(health_router(readiness), prefix=prefix, include_in_schema=False)
    app.include_router(health_router(readiness, metrics), include_in_schema=False)
    return app


def serve(app: FastAPI, *, service: str, port: int, log_level: str = "INFO") -> None:
    """Run the API with uvicorn on loopback (the gateway is the only way in)."""
    configure_logging(service, log_level)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,  # keep our JSON, personal-data-filtered logging
        access_log=False,  # the gateway's privacy-preserving access log is the one kept
        loop="uvloop",
        http="httptools",
        proxy_headers=False,
    )
