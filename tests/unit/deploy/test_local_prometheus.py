"""The local Prometheus runs the configuration operators deploy, only faster."""

from pathlib import Path

import yaml

from deploy.local import prometheus
from tests.support.alerts import prometheus_yaml


def test_the_local_configuration_is_the_deployed_one_with_shorter_intervals() -> None:
    local = yaml.safe_load(prometheus.render_conf())
    deployed = prometheus_yaml("prometheus.yml")
    assert local["scrape_configs"] == deployed["scrape_configs"]
    assert local["global"] == {
        "scrape_interval": "5s",
        "scrape_timeout": "5s",
        "evaluation_interval": "5s",
    }
    rules = [Path(name) for name in local["rule_files"]]
    assert rules == [prometheus.SOURCE / name for name in deployed["rule_files"]]
    assert all(path.is_absolute() and path.exists() for path in rules)
