"""Operators see a stopped worker: the API's /metrics reads its consumer group from Kafka,
and the real Prometheus of the stack takes the NoConsumer alert's first step."""

import asyncio
import time

import httpx
import pytest

from deploy.local import gateway, services
from deploy.local.layout import Layout
from services.accounts.config import ERASURE_GROUP
from tests.support.platform import metric_samples
from tests.support.prometheus import wait_for_alert

WORKER = "accounts-worker"
MEMBERS = f'consumer_group_members{{group="{ERASURE_GROUP}"}}'


async def _members_become(metrics: httpx.AsyncClient, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (members := metric_samples((await metrics.get("/metrics")).text).get(MEMBERS)) != (
        expected
    ):
        assert time.monotonic() < deadline, f"{MEMBERS} is {members}, expected {expected}"
        await asyncio.sleep(0.5)


async def test_a_stopped_worker_shows_as_a_group_without_members_until_it_restarts(
    platform: str, prometheus: str
) -> None:
    layout = Layout.from_env()
    if services.make_run_active(layout):
        pytest.skip("make run owns the processes")  # stopping one, honcho ends them all
    if services.running(layout, WORKER) is None:
        pytest.skip("the accounts worker is not run by this test session")
    async with httpx.AsyncClient(
        base_url=f"http://{gateway.UPSTREAMS['accounts']}", timeout=30
    ) as metrics:
        await _members_become(metrics, 1, within=60)
        await asyncio.to_thread(services.stop_processes, [WORKER], layout)
        try:
            # A worker stopped cleanly leaves its group at once.
            await _members_become(metrics, 0, within=30)
            # Pending: the rule holds on what Prometheus scraped; it pages after 5 minutes.
            alert = await wait_for_alert(
                prometheus, "NoConsumer", {"group": ERASURE_GROUP, "job": "accounts"}, "pending"
            )
            assert alert["labels"]["severity"] == "page"
        finally:
            await asyncio.to_thread(services.ensure_processes, [WORKER], layout)
        await _members_become(metrics, 1, within=60)
