"""deploy/docker-compose.yml runs what `make run` runs (no Docker here: its structure)."""

from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from deploy import compose
from deploy.local.gateway import UPSTREAMS
from deploy.local.services import procfile_entries
from services.accounts.config import AccountsSettings
from services.analytics.config import AnalyticsSettings
from services.deletion.config import DeletionSettings
from services.notifier.config import NotifierSettings

REPO = Path(__file__).resolve().parents[3]
SETTINGS: list[type[BaseSettings]] = [
    AccountsSettings,
    AnalyticsSettings,
    DeletionSettings,
    NotifierSettings,
]


def _services() -> dict[str, Any]:
    text = (REPO / "deploy" / "docker-compose.yml").read_text()
    assert text == compose.render(), "deploy/docker-compose.yml is stale: run make docs"
    services: dict[str, Any] = yaml.safe_load(text)["services"]
    return services


def test_every_process_of_make_run_is_a_container_with_the_same_command() -> None:
    services = _services()
    processes = procfile_entries()
    assert len(processes) >= 13
    for name, command in processes.items():
        assert services[name]["command"] == command, name


def test_each_api_listens_on_the_compose_network_and_is_published_on_loopback() -> None:
    services = _services()
    for service, upstream in UPSTREAMS.items():
        port = upstream.rpartition(":")[2]
        api = services[f"{service}-api"]
        assert api["environment"]["IMT_HTTP_HOST"] == "0.0.0.0"
        assert api["ports"] == [f"127.0.0.1:{port}:{port}"]
    published = {name for name, s in services.items() if "ports" in s}
    assert published == {f"{service}-api" for service in UPSTREAMS} | {"mail", "gateway"}
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))


def test_the_gateway_routes_to_every_api_by_its_compose_name_with_tls() -> None:
    services = _services()
    gateway = services["gateway"]
    assert gateway["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:8443:8443"]
    assert set(gateway["depends_on"]) == {"gateway-tls", *(f"{s}-api" for s in UPSTREAMS)}
    assert "./gateway:/etc/nginx/imt:ro" in gateway["volumes"]
    conf = compose.gateway_files()["nginx.conf"]
    for service, upstream in UPSTREAMS.items():
        assert f"server {service}-api:{upstream.rpartition(':')[2]} " in conf
    assert "ssl_certificate /etc/nginx/tls/server.pem;" in conf
    assert services["gateway-tls"]["command"] == "python -m deploy.local.tls /tls"


def test_prometheus_runs_the_deployed_configuration_where_the_apis_are_published() -> None:
    prometheus = _services()["prometheus"]
    assert prometheus["network_mode"] == "host"  # the targets are the APIs' 127.0.0.1 ports
    mount, _, mode = prometheus["volumes"][0].rpartition(":")
    source, _, target = mount.partition(":")
    assert (REPO / "deploy" / source).resolve() == REPO / "deploy" / "prometheus"
    assert (target, mode) == ("/etc/prometheus", "ro")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "--web.console.templates=/etc/prometheus/consoles" in prometheus["command"]


def test_every_variable_set_for_the_processes_is_a_setting_they_read() -> None:
    known = {
        f"IMT_{name}".upper() for cls in SETTINGS for name in cls.model_fields
    }  # every service's settings include the platform's
    for name, service in _services().items():
        for variable in service.get("environment", {}):
            if variable.startswith("IMT_"):
                assert variable in known, (name, variable)


def test_services_start_after_their_topics_and_databases_exist() -> None:
    services = _services()
    for name in procfile_entries():
        assert services[name]["depends_on"] == {
            "topics": {"condition": "service_completed_successfully"},
            "provision": {"condition": "service_completed_successfully"},
        }
    assert services["provision"]["command"].startswith("python -m deploy.local.postgres provision")
