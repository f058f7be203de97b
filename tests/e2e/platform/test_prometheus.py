"""The real Prometheus of the stack scrapes every API and evaluates every alert rule on
what they export (no target down, no rule failing to evaluate), and renders the
operators' dashboard from it."""

from __future__ import annotations

import asyncio
import html
import re
import time

import httpx

from deploy.local import gateway
from services.accounts.config import AccountsSettings
from services.analytics.config import AnalyticsSettings
from services.deletion.config import DeletionSettings
from services.notifier.config import NotifierSettings
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


def _rows(page: str) -> list[list[str]]:
    """The cells of every table row of a page, as text."""
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)
        rows.append([html.unescape(re.sub(r"\s+", " ", c)).strip() for c in cells])
    return rows


async def test_the_operators_dashboard_shows_every_service_group_the_audit_chain_and_hashing(
    platform: str, prometheus: str
) -> None:
    groups = {
        group
        for settings in (
            AccountsSettings(), AnalyticsSettings(), DeletionSettings(), NotifierSettings()
        )
        for group in settings.consumer_groups()
    }  # fmt: skip
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=prometheus, timeout=30) as client:
        while True:
            response = await client.get("/consoles/imt.html")
            assert response.status_code == 200, response.text[:500]
            rows = _rows(response.text)
            services = {r[0]: r[1] for r in rows if r and r[0] in gateway.UPSTREAMS}
            shown_groups = {r[0] for r in rows if r and r[0] in groups}
            chain = [r for r in rows if r and r[0] in ("intact", "BROKEN")]
            hashing = [r for r in rows if r and r[0] == gateway.UPSTREAMS["accounts"]]
            if (
                services == dict.fromkeys(gateway.UPSTREAMS, "up")
                and shown_groups == groups
                and chain
                and hashing
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    assert services == dict.fromkeys(gateway.UPSTREAMS, "up")
    assert shown_groups == groups
    assert chain[0][0] == "intact"
    assert chain[0][1].isdigit()  # rows checked, exactly (an auditor compares counts)
    # The accounts API's hashing pool: none waiting between requests; each mean a
    # duration, or "-" when no password was hashed in the last 5 minutes.
    [(_, waiting, mean_wait, mean_hash)] = hashing
    assert waiting == "0"
    for mean in (mean_wait, mean_hash):
        assert mean == "-" or re.fullmatch(r"[0-9.]+(ms|s|us|µs)", mean), mean
    assert "executing template" not in response.text  # no query failed to render
