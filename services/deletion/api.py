"""The deletion API process: ``python -m services.deletion.api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.deletion.bootstrap import bootstrap, dependencies
from services.deletion.config import DeletionSettings
from services.deletion.context import Context
from services.deletion.gauges import DeletionGauges
from services.deletion.routes import links, me, operators
from shared.service import Runtime, serve, service_app


def build_app(settings: DeletionSettings) -> FastAPI:
    @asynccontextmanager
    async def start(app: FastAPI) -> AsyncIterator[Runtime]:
        runtime = await bootstrap(settings)
        app.state.deletion = Context(settings, runtime, dependencies(settings, runtime))
        try:
            yield runtime
        finally:
            await runtime.close()

    return service_app(
        service="deletion",
        title="iMT deletion",
        settings=settings,
        routers=[me.router, links.router, operators.router],
        start=start,
        follow_revocations=True,
        gauges=DeletionGauges,
    )


def main() -> None:
    settings = DeletionSettings()
    serve(build_app(settings), service="deletion", port=settings.deletion_http_port,
          log_level=settings.log_level, host=settings.http_host)  # fmt: skip


if __name__ == "__main__":
    main()
