"""The local Prometheus runs the configuration operators deploy, only faster."""

import shutil
from pathlib import Path

import pytest
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


def test_an_edited_rule_file_changes_the_configuration_so_prometheus_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "prometheus"
    shutil.copytree(prometheus.SOURCE, source)
    monkeypatch.setattr(prometheus, "SOURCE", source)
    before = prometheus.render_conf()
    assert prometheus.render_conf() == before
    rules = source / "alerts.yml"
    rules.write_text(rules.read_text().replace("for: 2m", "for: 3m", 1))
    assert prometheus.render_conf() != before
