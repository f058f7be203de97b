"""The accounts API process: ``python -m services.accounts.api``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.accounts.bootstrap import bootstrap, ensure_first_admin
from services.accounts.config import AccountsSettings
from services.accounts.context import Context
from services.accounts.routes import auth, me, operators
from services.accounts.sessions import session_checker
from shared.observability import Metrics, Problem, ReadinessCheck, postgres_check
from shared.service import Runtime, create_api, serve


def build_app(settings: AccountsSettings) -> FastAPI:
    metrics = Metrics(settings.service_name)
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await bootstrap(settings)
        state["runtime"] = runtime
        await ensure_first_admin(runtime, settings)
        context = Context(settings, runtime)
        app.state.accounts = context
        app.state.token_public_key = settings.token_public_key
        app.state.session_check = session_checker(context)
        try:
            yield
        finally:
            await state.pop("runtime").close()

    def readiness() -> Mapping[str, ReadinessCheck]:
        runtime = state.get("runtime")
        return {} if runtime is None else {"postgres": postgres_check(runtime.pool)}

    app = create_api(
        service="accounts",
        title="iMT accounts",
        version="1",
        routers=[auth.router, me.router, operators.router],
        lifespan=lifespan,
        readiness=readiness,
        metrics=metrics,
    )
    app.add_exception_handler(asyncpg.DataError, _unstorable)
    return app


async def _unstorable(_request: Request, _exc: Exception) -> JSONResponse:
    # Text PostgreSQL cannot hold (a NUL character, say): the client's input, not our fault.
    return Problem(
        422,
        "Invalid characters",
        "Some text holds characters that cannot be stored.",
        slug="validation",
    ).response()


def main() -> None:
    settings = AccountsSettings()
    serve(
        build_app(settings),
        service="accounts",
        port=settings.accounts_http_port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
