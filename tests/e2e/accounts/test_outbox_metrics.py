"""Operators see a stalled relay: the API's /metrics reads its service's outbox."""

import asyncio
import time

import httpx
import pytest

from deploy.local import gateway, services
from deploy.local.layout import Layout
from tests.e2e.accounts.support import sign_up
from tests.support.platform import outbox_gauges

RELAY = "accounts-relay"


async def _outbox(metrics: httpx.AsyncClient) -> dict[str, float]:
    return outbox_gauges((await metrics.get("/metrics")).text)


async def test_a_stopped_relay_shows_as_a_growing_backlog_that_drains_on_restart(
    client: httpx.AsyncClient,
) -> None:
    layout = Layout.from_env()
    if services.make_run_active(layout):
        pytest.skip("make run owns the processes")  # stopping one, honcho ends them all
    if services.running(layout, RELAY) is None:
        pytest.skip("the accounts relay is not run by this test session")
    own_port = f"http://{gateway.UPSTREAMS['accounts']}"
    async with httpx.AsyncClient(base_url=own_port, timeout=10) as metrics:
        await asyncio.to_thread(services.stop_processes, [RELAY], layout)
        try:
            await sign_up(client)  # its events wait in the outbox
            await asyncio.sleep(1.1)
            stalled = await _outbox(metrics)
        finally:
            await asyncio.to_thread(services.ensure_processes, [RELAY], layout)
        assert stalled["outbox_backlog"] >= 1
        assert stalled["outbox_oldest_seconds"] >= 1.0
        deadline = time.monotonic() + 30
        while (drained := await _outbox(metrics))["outbox_backlog"] > 0:
            assert time.monotonic() < deadline, f"the outbox never drained: {drained}"
            await asyncio.sleep(0.2)
    assert drained["outbox_oldest_seconds"] == 0.0
