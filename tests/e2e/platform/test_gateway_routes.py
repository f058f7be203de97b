"""Every service API answers through the gateway, with the platform's conventions."""

import asyncio
import time

import httpx
import pytest

from deploy.local import gateway
from services.accounts.config import AccountsSettings
from services.analytics.config import AnalyticsSettings
from services.deletion.config import DeletionSettings
from services.notifier.config import NotifierSettings
from shared.config import PlatformSettings
from shared.events import dlq_of
from tests.support.platform import metric_samples, outbox_gauges, selected_apis


@pytest.mark.parametrize("service", selected_apis())
async def test_each_api_answers_through_the_gateway_which_hides_its_probes(
    platform: str, service: str
) -> None:
    # The probes tell whether PostgreSQL and Kafka are up: for the orchestrator, on the
    # API's own port, not for the public.
    host, _, port = gateway.UPSTREAMS[service].rpartition(":")
    async with httpx.AsyncClient(timeout=30) as client:
        ready = await client.get(f"http://{host}:{port}/api/{service}/readyz")
        hidden = {
            path: await client.get(f"{platform}{path}")
            for path in (f"/api/{service}/readyz", f"/api/{service}/healthz",
                         f"/api/{service}//readyz")
        }  # fmt: skip
        missing = await client.get(f"{platform}/api/{service}/no-such-thing")
        spec = await client.get(f"{platform}/api/{service}/openapi.json")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    for path, response in hidden.items():
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json"), path
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert spec.status_code == 200  # the API's description stays public
    assert "set-cookie" not in spec.headers


@pytest.mark.parametrize("service", selected_apis())
async def test_metrics_are_not_reachable_through_the_gateway(platform: str, service: str) -> None:
    # Each API serves /metrics at its root, outside the /api/<service>/ prefix, the only
    # part of its paths the gateway forwards: Prometheus scrapes the API's own port.
    host, _, port = gateway.UPSTREAMS[service].rpartition(":")
    async with httpx.AsyncClient(timeout=30) as client:
        scraped = await client.get(f"http://{host}:{port}/metrics")
        through = {
            path: await client.get(f"{platform}{path}")
            for path in ("/metrics", f"/api/{service}/metrics", f"/api/{service}//metrics")
        }
    # The page exists, so a 404 below means the gateway hides it, not that it is missing.
    assert scraped.status_code == 200
    assert "http_requests_total" in scraped.text
    for path, response in through.items():
        assert response.status_code == 404, path
        assert "http_requests_total" not in response.text, path


@pytest.mark.parametrize("service", selected_apis())
async def test_each_api_reports_its_outbox_on_its_own_port(platform: str, service: str) -> None:
    # Scraped from the service's port (loopback), never through the gateway.
    host, _, port = gateway.UPSTREAMS[service].rpartition(":")
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples = outbox_gauges(response.text)
    assert set(samples) == {"outbox_backlog", "outbox_oldest_seconds"}
    # The relays run: nothing waits in an outbox for long.
    assert samples["outbox_oldest_seconds"] < 60


SETTINGS: dict[str, type[PlatformSettings]] = {
    "accounts": AccountsSettings,
    "deletion": DeletionSettings,
    "notifier": NotifierSettings,
    "analytics": AnalyticsSettings,
}


@pytest.mark.parametrize("service", selected_apis())
async def test_each_api_reports_its_consumer_groups_lag_and_members(
    platform: str, service: str
) -> None:
    groups = SETTINGS[service]().consumer_groups()
    assert groups, f"{service} declares no consumer group"
    host, _, port = gateway.UPSTREAMS[service].rpartition(":")
    deadline = time.monotonic() + 60  # workers may still be joining their groups
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
        while True:
            samples = metric_samples((await client.get("/metrics")).text)
            members = {g: samples.get(f'consumer_group_members{{group="{g}"}}') for g in groups}
            if all(n is not None and n >= 1 for n in members.values()):
                break
            assert time.monotonic() < deadline, f"{service}: group members {members}"
            await asyncio.sleep(0.5)
    for group, topics in groups.items():
        for topic in topics:
            assert f'consumer_lag{{group="{group}",topic="{topic}"}}' in samples
            assert f'dead_letter_records{{topic="{dlq_of(topic)}"}}' in samples


OWN_GAUGES = {
    "notifier": ["notices_held", 'email_deliveries{status="dead"}', "email_oldest_due_seconds"],
    "deletion": [
        'deletion_requests{stage="grace"}',
        'deletion_stage_oldest_seconds{stage="holds"}',
        'deletion_requests_overdue{regime="gdpr"}',
    ],
}


@pytest.mark.parametrize("service", sorted(set(OWN_GAUGES) & set(selected_apis())))
async def test_services_report_their_own_gauges(platform: str, service: str) -> None:
    host, _, port = gateway.UPSTREAMS[service].rpartition(":")
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
        samples = metric_samples((await client.get("/metrics")).text)
    for series in OWN_GAUGES[service]:
        assert series in samples, series
        assert samples[series] >= 0


async def test_operators_endpoints_are_not_there_for_anyone_outside_operators_networks(
    platform: str,
) -> None:
    """The local gateway lets operators in from 127.0.0.1 and ::1 only
    (IMT_GATEWAY_OPERATOR_NETWORKS). From 127.0.0.2, a loopback address too but not
    among them, an operator's endpoint is not there (JSON 404) while a user's is."""
    operators = [
        "/api/accounts/operator/stats",
        "/api/accounts/operator/audit/verify",
        "/api/deletion/operator/pipeline",
        "/api/notifier/ops/suppressions",
    ]
    away = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with (
        httpx.AsyncClient(timeout=30) as here,
        httpx.AsyncClient(transport=away, timeout=30) as elsewhere,
    ):
        allowed = {path: await here.get(f"{platform}{path}") for path in operators}
        refused = {path: await elsewhere.get(f"{platform}{path}") for path in operators}
        login = await elsewhere.post(f"{platform}/api/accounts/operator/sessions", json={})
        public = await elsewhere.get(f"{platform}/api/accounts/openapi.json")
        whole_here = await here.get(f"{platform}/api/accounts/operator/openapi.json")
        whole_elsewhere = await elsewhere.get(f"{platform}/api/accounts/operator/openapi.json")
    for path in operators:
        assert allowed[path].status_code == 401, (path, allowed[path].text)  # a token, next
        assert refused[path].status_code == 404, (path, refused[path].text)
        assert refused[path].headers["content-type"].startswith("application/problem+json")
    assert login.status_code == 404  # no password can be tried from there
    assert public.status_code == 200
    # Nor are operators' endpoints mapped from there: the public document leaves them out.
    assert whole_here.status_code == 200
    operator_paths = [p for p in whole_here.json()["paths"] if "/operator/" in p]
    assert "/api/accounts/operator/users/search" in operator_paths  # the public one has none
    assert not [p for p in public.json()["paths"] if "/operator/" in p]
    assert "/api/accounts/me" in public.json()["paths"]
    assert whole_elsewhere.status_code == 404
