"""HTTP metrics are labelled by route template and status, never by raw path."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from shared.observability import Metrics, MetricsMiddleware, install_problem_handlers
from tests.unit.observability.conftest import client_for


def _app(metrics: Metrics) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        return {"user_id": "hidden"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    install_problem_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _requests(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    payload, _ = metrics.render()
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(payload.decode())
        if family.name == "http_requests"
        for s in family.samples
        if s.name == "http_requests_total"
    }


async def test_requests_are_labelled_by_route_template_not_raw_path() -> None:
    metrics = Metrics("accounts")
    async with client_for(_app(metrics)) as client:
        assert (await client.get("/users/jane@example.com")).status_code == 200
        assert (await client.get("/users/42")).status_code == 200

    payload, _ = metrics.render()
    assert b"jane" not in payload
    assert b"example.com" not in payload
    assert _requests(metrics) == {("/users/{user_id}", "GET", "200"): 2.0}
    assert b'http_request_seconds_count{method="GET",route="/users/{user_id}"} 2.0' in payload


async def test_unmatched_paths_share_one_label() -> None:
    metrics = Metrics("accounts")
    async with client_for(_app(metrics)) as client:
        assert (await client.get("/nothing/jane@example.com")).status_code == 404
        assert (await client.request("BREW", "/users/1")).status_code == 405

    assert _requests(metrics) == {
        ("<unmatched>", "GET", "404"): 1.0,
        ("/users/{user_id}", "OTHER", "405"): 1.0,
    }
    assert b"jane" not in metrics.render()[0]


async def test_unhandled_errors_count_as_500() -> None:
    metrics = Metrics("accounts")
    async with client_for(_app(metrics)) as client:
        assert (await client.get("/boom")).status_code == 500
    assert _requests(metrics) == {("/boom", "GET", "500"): 1.0}


def test_standard_instruments_render_in_a_registry_of_their_own() -> None:
    first, second = Metrics("accounts"), Metrics("accounts")
    first.events_published.labels("users.registered").inc(3)
    first.outbox_backlog.set(7)

    payload, content_type = first.render()
    text = payload.decode()
    assert content_type.startswith("text/plain")
    assert 'events_published_total{topic="users.registered"} 3.0' in text
    assert "outbox_backlog 7.0" in text
    assert 'service_info{service="accounts"} 1.0' in text
    assert "outbox_backlog 0.0" in second.render()[0].decode()


def test_openmetrics_when_asked() -> None:
    payload, content_type = Metrics("accounts").render("application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert payload.endswith(b"# EOF\n")
