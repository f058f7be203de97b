"""The accounts API process: ``python -m services.accounts.api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.accounts.audit_gauges import AuditChainGauges
from services.accounts.bootstrap import bootstrap, ensure_first_admins
from services.accounts.config import AccountsSettings
from services.accounts.context import Context
from services.accounts.hashing_load import HashingLoadCollector
from services.accounts.routes import auth, me, operators, password_reset
from services.accounts.security import HASHING_LOAD
from services.accounts.sessions import session_checker
from shared.service import Runtime, serve, service_app


def build_app(settings: AccountsSettings) -> FastAPI:
    @asynccontextmanager
    async def start(app: FastAPI) -> AsyncIterator[Runtime]:
        runtime = await bootstrap(settings)
        try:
            await ensure_first_admins(runtime, settings)
            context = Context(settings, runtime)
            app.state.accounts = context
            app.state.session_check = session_checker(context)
            yield runtime
        finally:
            await runtime.close()

    app = service_app(
        service="accounts",
        title="iMT accounts",
        settings=settings,
        # The user's own routes first: profile reads are the most frequent request.
        routers=[me.router, auth.router, password_reset.router, operators.router],
        start=start,
        gauges=lambda registry: _gauges(registry, settings),
    )
    # Text PostgreSQL cannot hold (a NUL, say) is a 422 in every service: see
    # shared/observability/problems.py (install_problem_handlers).
    return app


def _gauges(registry: CollectorRegistry, settings: AccountsSettings) -> AuditChainGauges:
    # The hashing pool's load is read at each scrape, straight from the pool.
    registry.register(HashingLoadCollector(HASHING_LOAD))
    return AuditChainGauges(registry, settings.accounts_audit_full_check_seconds)


def main() -> None:
    settings = AccountsSettings()
    serve(
        build_app(settings),
        service="accounts",
        port=settings.accounts_http_port,
        log_level=settings.log_level,
        host=settings.http_host,
    )


if __name__ == "__main__":
    main()
