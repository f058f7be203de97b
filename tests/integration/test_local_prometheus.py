"""The local Prometheus component (deploy/local/prometheus.py) on its own state folder
and port: reused when it runs as configured, restarted when its flags are outdated."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local import procs, prometheus
from deploy.local.layout import Layout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    base = Layout.from_env()
    ports = dataclasses.replace(base.ports, prometheus=_free_port())
    own = Layout(state=tmp_path, cache=base.cache, ports=ports)
    own.prepare()
    yield own
    prometheus.down(own, wipe=True)


def test_a_running_prometheus_is_reused_and_one_with_old_flags_restarted(layout: Layout) -> None:
    prometheus.up(layout)
    first = prometheus.running_pid(layout)
    prometheus.up(layout)
    assert prometheus.running_pid(layout) == first  # as configured: kept

    prometheus.down(layout)
    old_flags = [a for a in prometheus._argv(layout) if "console" not in a]
    (prometheus.home(layout) / "console_libraries").mkdir(exist_ok=True)
    stale = procs.spawn(
        old_flags, layout.log("prometheus"), layout.pidfile("prometheus"), prometheus.home(layout)
    )
    assert procs.wait_for(lambda: prometheus.ready(layout), 60, lambda: procs.pid_alive(stale))
    prometheus.up(layout)
    current = prometheus.running_pid(layout)
    assert current not in (None, stale)
    assert not procs.pid_alive(stale)
    page = httpx.get(f"{prometheus.url(layout)}/consoles/imt.html", timeout=30)
    assert page.status_code == 200  # the dashboard came with the new flags
