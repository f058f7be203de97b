"""The deletion API process: ``python -m services.deletion.api``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.deletion.bootstrap import bootstrap, dependencies
from services.deletion.config import DeletionSettings
from services.deletion.context import Context
from services.deletion.routes import me, operators
from shared.observability import Metrics, ReadinessCheck, postgres_check
from shared.service import Runtime, create_api, serve


def build_app(settings: DeletionSettings) -> FastAPI:
    metrics = Metrics(settings.service_name)
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await bootstrap(settings)
        state["runtime"] = runtime
        app.state.deletion = Context(settings, runtime, dependencies(settings, runtime))
        app.state.token_public_key = settings.token_public_key
        try:
            yield
        finally:
            await state.pop("runtime").close()

    def readiness() -> Mapping[str, ReadinessCheck]:
        runtime = state.get("runtime")
        return {} if runtime is None else {"postgres": postgres_check(runtime.pool)}

    return create_api(
        service="deletion",
        title="iMT deletion",
        version="1",
        routers=[me.router, operators.router],
        lifespan=lifespan,
        readiness=readiness,
        metrics=metrics,
    )


def main() -> None:
    settings = DeletionSettings()
    serve(build_app(settings), service="deletion", port=settings.deletion_http_port,
          log_level=settings.log_level)  # fmt: skip


if __name__ == "__main__":
    main()
