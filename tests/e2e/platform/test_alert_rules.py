"""Every metric an alert rule reads is exported by the running platform."""

import httpx

from deploy.local import gateway
from tests.support.alerts import alert_rules, metric_names
from tests.support.platform import metric_samples

# Made by Prometheus itself for every target, not by the targets.
SYNTHETIC = {"up"}


async def test_no_alert_rule_reads_a_metric_nothing_exports(platform: str) -> None:
    exported: set[str] = set()
    async with httpx.AsyncClient(timeout=30) as client:
        for upstream in gateway.UPSTREAMS.values():
            page = (await client.get(f"http://{upstream}/metrics")).text
            exported |= {series.partition("{")[0] for series in metric_samples(page)}
    for rule in alert_rules():
        missing = metric_names(rule["expr"]) - exported - SYNTHETIC
        assert not missing, f"{rule['alert']} reads {missing}, which nothing exports"
