"""A service API runs each request under the gateway's request id as its trace id: the
problem bodies it answers and the events it queues carry it."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter

from shared.events import envelope_for
from shared.events.catalogue.accounts import ProfileUpdated
from shared.observability import Problem
from shared.service.request_trace import _TRACED
from shared.tracing import is_trace_id, trace_id_of, trace_id_var
from tests.unit.service.demo_api import demo_client

GATEWAY_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
USER = "0192f5e4-6f1d-7c4a-9b1e-3a2b1c0d9e8f"


def _client() -> httpx.AsyncClient:
    router = APIRouter()

    @router.post("/edit")
    async def edit() -> dict[str, str | None]:
        event = ProfileUpdated(user_id=USER, fields=("name",))
        envelope = envelope_for(event, source="demo", subject=USER)
        return {"trace_id": trace_id_var.get(), "traceparent": envelope.traceparent}

    @router.get("/missing")
    async def missing() -> None:
        raise Problem(404, detail="no such thing")

    return demo_client(router)


async def test_events_a_request_queues_carry_its_request_id() -> None:
    async with _client() as client:
        response = await client.post("/api/demo/edit", headers={"X-Request-Id": GATEWAY_ID})

    body = response.json()
    assert body["trace_id"] == GATEWAY_ID
    assert trace_id_of(body["traceparent"]) == GATEWAY_ID


async def test_a_problem_names_the_request_id_so_support_can_find_its_logs() -> None:
    async with _client() as client:
        response = await client.get("/api/demo/missing", headers={"X-Request-Id": GATEWAY_ID})

    assert response.status_code == 404
    assert response.json()["trace_id"] == GATEWAY_ID


async def test_without_a_usable_request_id_each_request_gets_its_own_trace() -> None:
    async with _client() as client:
        bare = await client.post("/api/demo/edit")
        odd = await client.post("/api/demo/edit", headers={"X-Request-Id": "user@example.com"})
        problem = await client.get("/api/demo/missing")

    traces = [bare.json()["trace_id"], odd.json()["trace_id"], problem.json()["trace_id"]]
    assert all(is_trace_id(t) for t in traces)
    assert len(set(traces)) == 3
    assert trace_id_of(bare.json()["traceparent"]) == traces[0]
    assert trace_id_var.get() is None  # nothing of a request's trace is left behind


@pytest.mark.parametrize(
    ("path", "traced"),
    [
        ("/api/demo/edit", True),
        ("/api/demo/healthzine", True),
        ("/api/demo/healthz", False),
        ("/api/demo//readyz/", False),
        ("/metrics", False),
        ("/healthz", False),
    ],
)
def test_only_api_work_is_traced_not_probes_or_scrapes(path: str, traced: bool) -> None:
    assert bool(_TRACED.match(path)) is traced
