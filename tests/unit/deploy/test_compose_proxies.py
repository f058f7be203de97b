"""In deploy/docker-compose.yml the APIs believe X-Forwarded-For from the gateway only:
its address is fixed, no other container can be given it, and it is what they trust."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from deploy import compose
from deploy.local.gateway import UPSTREAMS
from shared.service.forwarded import trusted_proxies

REPO = Path(__file__).resolve().parents[3]


def _compose() -> dict[str, Any]:
    text = (REPO / "deploy" / "docker-compose.yml").read_text()
    assert text == compose.render(), "deploy/docker-compose.yml is stale: run make docs"
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_each_api_trusts_the_gateways_fixed_address_only() -> None:
    document = _compose()
    gateway = document["services"]["gateway"]["networks"]["default"]["ipv4_address"]
    for service in UPSTREAMS:
        setting = document["services"][f"{service}-api"]["environment"]["IMT_TRUSTED_PROXIES"]
        assert trusted_proxies(setting) == [gateway], service


def test_no_other_container_can_be_given_the_gateways_address() -> None:
    document = _compose()
    gateway = ipaddress.ip_address(
        document["services"]["gateway"]["networks"]["default"]["ipv4_address"]
    )
    [pool] = document["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    assert gateway in subnet
    assert gateway not in dynamic  # Docker hands out addresses from ip_range only
    assert gateway != next(subnet.hosts())  # the bridge (the host's side) takes the first
    # No other service picks an address or a network of its own.
    for name, service in document["services"].items():
        if name not in ("gateway", "prometheus"):
            assert "networks" not in service, name
            assert "network_mode" not in service, name
