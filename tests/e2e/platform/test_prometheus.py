"""The real Prometheus of the stack scrapes every API and evaluates every alert rule on
what they export: no target down, no rule failing to evaluate."""

from __future__ import annotations

import asyncio
import time

from deploy.local import gateway
from tests.support.alerts import alert_rules
from tests.support.prometheus import api


async def test_prometheus_scrapes_every_api_and_evaluates_every_rule(
    platform: str, prometheus: str
) -> None:
    deadline = time.monotonic() + 90
    while True:
        targets = (await api(prometheus, "targets"))["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
        rules = [r for g in (await api(prometheus, "rules"))["groups"] for r in g["rules"]]
        evaluated = {r["name"]: (r["health"], r.get("lastError", "")) for r in rules}
        # Right after a start, targets appear only once discovery has run (seconds).
        settled = (
            set(health) == set(gateway.UPSTREAMS)
            and all(h == "up" for h, _ in health.values())
            and len(evaluated) == len(alert_rules())
            and all(h != "unknown" for h, _ in evaluated.values())
        )
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    assert health == {job: ("up", "") for job in gateway.UPSTREAMS}
    assert evaluated == {rule["alert"]: ("ok", "") for rule in alert_rules()}
