"""The alert rules under the real Prometheus engine: promtool runs alerts.test.yml (when
each rule fires, and the look-alike cases where it must not), and checks the
configuration operators deploy."""

from __future__ import annotations

import subprocess

import yaml

from deploy.local import prometheus
from tests.support.alerts import PROMETHEUS, alert_rules


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    prometheus.ensure_binary()  # installs Debian's prometheus (and promtool) when missing
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, check=False
    )


def test_every_rule_fires_when_it_should_and_only_then() -> None:
    done = _promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_rule_has_a_case_where_it_fires() -> None:
    cases = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_the_deployed_configuration_and_rules_are_valid() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        done = _promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr
