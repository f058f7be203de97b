"""The HTTP conventions of every service API.

Routes live under ``/api/<service>/`` (the gateway forwards that prefix unchanged);
``/api/<service>/healthz`` and ``/readyz`` (which dependency is down) and ``/metrics``
answer only on the service's own port: the gateway routes none of them. Errors are RFC 9457
problem bodies carrying the request's trace id (``shared.service.request_trace``);
no answer may be cached unless its route says so (``shared.service.no_store``);
request metrics are labelled by route template, never by raw path. A
JSON body holding a string that is not valid Unicode is refused (422) before any route
reads it (``shared.service.unicode``). The OpenAPI document at ``/api/<service>/openapi.json``
describes what anyone may call; the whole one, operators' endpoints included, is at
``/api/<service>/operator/openapi.json``, which the gateway serves to operators' networks
only, like those endpoints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from shared.auth.revocation_reader import RevocationReader
from shared.bus.lag import GroupWatch
from shared.config import PlatformSettings
from shared.observability import (
    Metrics,
    MetricsMiddleware,
    ReadinessCheck,
    health_router,
    install_problem_handlers,
    kafka_check,
    postgres_check,
)
from shared.observability.problems import answer_unexpected_errors
from shared.process import start_process
from shared.service.forwarded import trust_forwarded_for
from shared.service.no_store import NoStoreMiddleware
from shared.service.problem_docs import document_problems
from shared.service.request_trace import RequestTraceMiddleware
from shared.service.runtime import Runtime
from shared.service.unicode import refuse_invalid_unicode

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class ServiceGauges(Protocol):
    """A service's own gauges, registered once and set from its database at each scrape.
    One may also have ``async close()``, called before the runtime closes."""

    async def refresh(self, runtime: Runtime) -> None: ...


#: A service's start-up: opens its runtime, puts what its routes need on ``app.state``,
#: yields the runtime, and closes everything on exit.
StartUp = Callable[[FastAPI], AbstractAsyncContextManager[Runtime]]


def create_api(
    *,
    service: str,
    title: str,
    version: str,
    routers: Sequence[APIRouter],
    lifespan: Lifespan,
    readiness: Callable[[], Mapping[str, ReadinessCheck]],
    metrics: Metrics,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with the platform's health, metrics and error conventions."""
    prefix = f"/api/{service}"
    app = FastAPI(
        title=title,
        version=version,
        lifespan=lifespan,
        # Served by the routes below, the public one without operators' endpoints.
        openapi_url=None,
        # FastAPI's docs pages load Swagger UI from a CDN: a third-party resource, which
        # the platform's pages never load (P-21). The OpenAPI document itself is served.
        docs_url=None,
        redoc_url=None,
    )
    describe_problems(app)
    serve_openapi(app, prefix)
    install_problem_handlers(app)
    refuse_invalid_unicode(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Again outside the metrics: a 500 of theirs gets the trace id and no-store too.
    answer_unexpected_errors(app)
    app.add_middleware(NoStoreMiddleware)
    app.add_middleware(RequestTraceMiddleware)  # last added: outermost
    for router in routers:
        app.include_router(router, prefix=prefix)
    app.include_router(health_router(readiness), prefix=prefix, include_in_schema=False)
    app.include_router(
        health_router(readiness, metrics, before_scrape=before_scrape), include_in_schema=False
    )
    return app


# Where operators' endpoints live in every service (the gateway's OPERATOR_PATHS).
OPERATOR_PREFIXES = ("operator", "ops")
# A route's openapi_extra when it answers operators only outside those prefixes (the
# gateway serves it to operators' networks alone: deploy/local/gateway.py ANALYST_PATHS).
OPERATORS_ONLY: dict[str, Any] = {"x-operators-only": True}


def public_openapi(document: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``document`` without operators' endpoints (under an operators' prefix, or marked
    :data:`OPERATORS_ONLY`), nor the schemas only they use (their bodies would describe
    them)."""
    hidden = tuple(f"{prefix}/{p}" for p in OPERATOR_PREFIXES)
    paths = {}
    for path, item in document.get("paths", {}).items():
        if any(path == h or path.startswith(f"{h}/") for h in hidden):
            continue
        shown = {
            method: operation
            for method, operation in item.items()
            if not (isinstance(operation, dict) and operation.get("x-operators-only"))
        }
        if shown:
            paths[path] = shown
    public = {**document, "paths": paths}
    schemas = document.get("components", {}).get("schemas")
    if schemas:
        used = _referenced(paths, schemas)
        kept = {name: schema for name, schema in schemas.items() if name in used}
        public["components"] = {**document["components"], "schemas": kept}
    return public


_SCHEMA_REF = "#/components/schemas/"


def _referenced(root: object, schemas: Mapping[str, Any]) -> set[str]:
    """Names of the schemas ``root`` refers to, directly or through one another."""
    found: set[str] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_SCHEMA_REF):
                name = ref.removeprefix(_SCHEMA_REF)
                if name not in found and name in schemas:
                    found.add(name)
                    pending.append(schemas[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def describe_problems(app: FastAPI) -> None:
    """The app's OpenAPI document declares its errors as they are answered
    (``shared.service.problem_docs``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def serve_openapi(app: FastAPI, prefix: str) -> None:
    """The public document, and the whole one under the operators' prefix."""

    @app.get(f"{prefix}/openapi.json", include_in_schema=False)
    async def public_document() -> JSONResponse:
        return JSONResponse(public_openapi(app.openapi(), prefix))

    @app.get(f"{prefix}/{OPERATOR_PREFIXES[0]}/openapi.json", include_in_schema=False)
    async def whole_document() -> JSONResponse:
        return JSONResponse(app.openapi())


async def _close_gauges(gauges: ServiceGauges | None) -> None:
    # What a scrape left running (the audit chain's whole check) holds a connection of
    # the runtime's pool, whose close would wait for it.
    close = getattr(gauges, "close", None)
    if close is not None:
        await close()


def service_app(
    *,
    service: str,
    title: str,
    settings: PlatformSettings,
    routers: Sequence[APIRouter],
    start: StartUp,
    metrics: Metrics | None = None,
    gauges: Callable[[CollectorRegistry], ServiceGauges] | None = None,
    follow_revocations: bool = False,
) -> FastAPI:
    """A service API: ``start`` runs in the lifespan; readiness checks its database (and
    Kafka, when the runtime has a producer); access tokens verify with the platform key.
    With ``follow_revocations`` (every API but accounts, which reads its own sessions
    table), tokens of ended sessions are refused as the sessions topic tells, and the API
    is ready only once it has read that topic up to where it was at start.
    ``/metrics`` also reports the service's outbox, its consumer groups' lag, and what
    ``gauges`` (built on the metrics registry) reads from its database. ``request.client``
    is the X-Forwarded-For address only behind a trusted proxy (``shared.service.forwarded``)."""
    holder: dict[str, Runtime] = {}
    groups = settings.consumer_groups()
    watch = GroupWatch(settings, groups) if groups else None
    reader = RevocationReader(settings) if follow_revocations else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.token_public_key = settings.token_public_key
        if reader is not None:
            app.state.session_check = reader.session_check
            reader.start()
        try:
            async with start(app) as runtime:
                holder["runtime"] = runtime
                try:
                    yield
                finally:
                    holder.pop("runtime", None)
                    await _close_gauges(own)
                    if watch is not None:
                        await watch.close()
        finally:
            if reader is not None:
                await reader.close()

    def readiness() -> Mapping[str, ReadinessCheck]:
        runtime = holder.get("runtime")
        if runtime is None:
            return {}
        checks = runtime_checks(runtime)
        if reader is not None:
            checks["revocations"] = reader.ready
        return checks

    instruments = metrics or Metrics(settings.service_name)
    own = gauges(instruments.registry) if gauges is not None else None

    async def before_scrape() -> None:
        runtime = holder.get("runtime")
        if runtime is not None:
            await instruments.refresh_outbox(runtime.pool)
            if own is not None:
                await own.refresh(runtime)
            if watch is not None:
                await watch.report(instruments)

    app = create_api(
        service=service,
        title=title,
        version="1",
        routers=routers,
        lifespan=lifespan,
        readiness=readiness,
        metrics=instruments,
        before_scrape=before_scrape,
    )
    trust_forwarded_for(app, settings.trusted_proxies)
    return app


def runtime_checks(runtime: Runtime) -> dict[str, ReadinessCheck]:
    checks = {"postgres": postgres_check(runtime.pool)}
    if runtime.producer is not None:
        checks["kafka"] = kafka_check(runtime.producer.client.fetch_all_metadata)
    return checks


def serve(
    app: FastAPI, *, service: str, port: int, log_level: str = "INFO", host: str = "127.0.0.1"
) -> None:
    """Run the API with uvicorn, on loopback unless told otherwise (``IMT_HTTP_HOST``).
    Whoever else can reach that address can call the API directly, so the client's
    address is resolved by the app, from trusted proxies only (``service_app``)."""
    start_process(service, log_level)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # keep our JSON, personal-data-filtered logging
        access_log=False,  # the gateway's privacy-preserving access log is the one kept
        loop="uvloop",
        http="httptools",
        # Off: uvicorn's would trust FORWARDED_ALLOW_IPS (loopback by default) before the
        # app's own middleware, configured from IMT_TRUSTED_PROXIES, sees the peer.
        proxy_headers=False,
    )
