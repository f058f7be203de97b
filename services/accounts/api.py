"""The accounts API process: ``python -m services.accounts.api``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.accounts.bootstrap import bootstrap
from services.accounts.config import AccountsSettings
from shared.observability import Metrics, ReadinessCheck, postgres_check
from shared.service import Runtime, create_api, serve


def build_app(settings: AccountsSettings) -> FastAPI:
    metrics = Metrics(settings.service_name)
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["runtime"] = await bootstrap(settings)
        try:
            yield
        finally:
            await state.pop("runtime").close()

    def readiness() -> Mapping[str, ReadinessCheck]:
        runtime = state.get("runtime")
        return {} if runtime is None else {"postgres": postgres_check(runtime.pool)}

    return create_api(
        service="accounts",
        title="iMT accounts",
        version="1",
        routers=[],
        lifespan=lifespan,
        readiness=readiness,
        metrics=metrics,
    )


def main() -> None:
    settings = AccountsSettings()
    serve(build_app(settings), service="accounts", port=settings.accounts_http_port,
          log_level=settings.log_level)  # fmt: skip


if __name__ == "__main__":
    main()
