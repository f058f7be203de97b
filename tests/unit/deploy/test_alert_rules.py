"""The Prometheus configuration and alert rules under deploy/prometheus/ hold together."""

from pathlib import Path

from deploy.local.gateway import UPSTREAMS
from tests.support.alerts import alert_rules as rules
from tests.support.alerts import metric_names, prometheus_yaml


def test_every_rule_says_how_urgent_it_is_and_what_happened() -> None:
    assert len(rules()) >= 10
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_every_rule_links_to_its_section_of_the_operations_page() -> None:
    page = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    sections = {line[3:].strip().lower() for line in page.splitlines() if line.startswith("## ")}
    for rule in rules():
        name = rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in sections, f"docs/operations.md has no section {name}"


def test_prometheus_scrapes_every_api_and_loads_the_rules() -> None:
    config = prometheus_yaml("prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    targets = {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {service: [address] for service, address in UPSTREAMS.items()}


def test_metric_names_skip_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (job) (rate(http_requests_total{status=~"5.."}[5m]))'
        " / sum by (job) (rate(http_requests_total[5m])) > 0.05"
        " and on (job) up == 1 unless delta(consumer_lag[10m]) > 0"
    )
    assert metric_names(expr) == {"http_requests_total", "up", "consumer_lag"}
