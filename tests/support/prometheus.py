"""Reading the test stack's Prometheus (its HTTP API) while the platform runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def api(url: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.get(f"/api/v1/{path}")
    response.raise_for_status()
    return response.json()["data"]


async def wait_for_alert(
    url: str, name: str, labels: dict[str, str], state: str, within: float = 90.0
) -> dict[str, Any]:
    """The alert ``name`` whose labels include ``labels``, once it is in ``state``."""
    deadline = time.monotonic() + within
    while True:
        for alert in (await api(url, "alerts"))["alerts"]:
            if (
                alert["labels"].get("alertname") == name
                and labels.items() <= alert["labels"].items()
                and alert["state"] == state
            ):
                return dict(alert)
        assert time.monotonic() < deadline, f"no {state} {name} alert with {labels}"
        await asyncio.sleep(1.0)
