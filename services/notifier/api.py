"""The notifier API process: ``python -m services.notifier.api``.

Users' inbox (``/api/notifier/inbox``) and export (``/api/notifier/me/export``),
unsubscribe links (``/api/notifier/unsubscribe``)
and operators' views (``/api/notifier/ops``). It reads and writes the notifier's
database only; sending is the worker's job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.notifier.bootstrap import DATABASE, bootstrap
from services.notifier.config import NotifierSettings
from services.notifier.domain.templates import Renderer
from services.notifier.gauges import NotifierGauges
from services.notifier.routes import inbound, inbox, me, ops, unsubscribe
from services.notifier.stream import InboxHub
from shared.service import Runtime, serve, service_app


def build_app(settings: NotifierSettings) -> FastAPI:
    @asynccontextmanager
    async def start(app: FastAPI) -> AsyncIterator[Runtime]:
        app.state.settings = settings
        app.state.renderer = Renderer()
        runtime = await bootstrap(settings, with_producer=False)
        hub = InboxHub(runtime.pool, settings.database_dsn(DATABASE), app.state.renderer)
        await hub.start()
        app.state.hub = hub
        app.state.runtime = runtime
        try:
            yield runtime
        finally:
            app.state.runtime = None
            await hub.close()
            await runtime.close()

    return service_app(
        service="notifier",
        title="iMT notifier",
        settings=settings,
        routers=[
            inbox.router,
            inbox.policy_router,
            me.router,
            unsubscribe.router,
            inbound.router,
            ops.router,
        ],
        start=start,
        follow_revocations=True,
        gauges=NotifierGauges,
    )


def main() -> None:
    settings = NotifierSettings()
    serve(build_app(settings), service="notifier", port=settings.notifier_http_port,
          log_level=settings.log_level, host=settings.http_host)  # fmt: skip


if __name__ == "__main__":
    main()
