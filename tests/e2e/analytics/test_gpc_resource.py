"""The Global Privacy Control support resource, at the site root through the gateway.

Not a proof of P-25 (a static file): the collector's tests prove that such visits are
dropped (tests/e2e/analytics/test_collector.py)."""

import httpx


async def test_the_site_publishes_its_global_privacy_control_support(platform: str) -> None:
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        response = await client.get("/.well-known/gpc.json")
    assert response.status_code == 200
    assert response.json()["gpc"] is True
