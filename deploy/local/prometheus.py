"""Prometheus on loopback: scrapes the four APIs and evaluates the alert rules of
deploy/prometheus/, so an operator sees the platform's dashboard at
http://127.0.0.1:9090/consoles/imt.html and its alerts at /alerts while `make run` runs
(and the tests can watch an alert go off for real).

The configuration is deploy/prometheus/prometheus.yml, the one operators deploy, with a
shorter interval (a developer waits seconds, not a minute, for a change to show) and the
rule files at their absolute place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import yaml

from deploy.local import procs
from deploy.local.layout import HOST, REPO_ROOT, Layout

NAME = "prometheus"
INSTALL = "apt-get install -y --no-install-recommends prometheus"
READY_TIMEOUT = 60.0
SOURCE = REPO_ROOT / "deploy" / "prometheus"
INTERVAL = "5s"
RETENTION = "7d"


def home(layout: Layout) -> Path:
    return layout.state / NAME


def conf_path(layout: Layout) -> Path:
    return home(layout) / "prometheus.yml"


def url(layout: Layout) -> str:
    return f"http://{HOST}:{layout.ports.prometheus}"


def render_conf() -> str:
    config: dict[str, Any] = yaml.safe_load((SOURCE / "prometheus.yml").read_text())
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": INTERVAL,
        "scrape_timeout": INTERVAL,
        "evaluation_interval": INTERVAL,
    }
    rules = [SOURCE / name for name in config["rule_files"]]
    config["rule_files"] = [str(path) for path in rules]
    # The rules' digest is part of the text, so an edited rule file counts as a changed
    # configuration and a running Prometheus reloads it at the next `up`.
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in rules)).hexdigest()[:16]
    header = (
        "# Written by deploy/local/prometheus.py on every `up` from deploy/prometheus/.\n"
        f"# rules: {digest}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def find_binary() -> str | None:
    return shutil.which("prometheus")


def ensure_binary() -> str:
    found = find_binary()
    if found:
        return found
    procs.apt_install(["prometheus"], "Prometheus")
    return procs.require_binary("prometheus", INSTALL)


def running_pid(layout: Layout) -> int | None:
    return procs.our_pid(layout.pidfile(NAME), str(conf_path(layout)))


def ready(layout: Layout) -> bool:
    conn = http.client.HTTPConnection(HOST, layout.ports.prometheus, timeout=2)
    try:
        conn.request("GET", "/-/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _argv(layout: Layout) -> list[str]:
    libraries = home(layout) / "console_libraries"
    return [
        ensure_binary(),
        f"--config.file={conf_path(layout)}",
        f"--storage.tsdb.path={home(layout) / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={HOST}:{layout.ports.prometheus}",
        # The operators' dashboard (/consoles/imt.html) needs no console library.
        f"--web.console.templates={SOURCE / 'consoles'}",
        f"--web.console.libraries={libraries}",
    ]


def _start(layout: Layout) -> int:
    procs.require_free(layout.ports.prometheus, "Prometheus", "IMT_PROMETHEUS_PORT")
    (home(layout) / "console_libraries").mkdir(exist_ok=True)
    return procs.spawn(_argv(layout), layout.log(NAME), layout.pidfile(NAME), cwd=home(layout))


def check_config(layout: Layout) -> None:
    """promtool's verdict on the configuration and the rules it loads (clear errors)."""
    ensure_binary()
    promtool = procs.require_binary("promtool", INSTALL)
    procs.run([promtool, "check", "config", str(conf_path(layout))], "promtool check config")


def up(layout: Layout) -> str:
    home(layout).mkdir(parents=True, exist_ok=True)
    changed = procs.write_atomic(conf_path(layout), render_conf())
    pid = running_pid(layout)
    if pid is not None and procs.cmdline(pid).split() != _argv(layout):
        # Started by an older version with other flags: a reload would not change them.
        procs.stop_daemon(pid, layout.pidfile(NAME), None, timeout=20)
        pid = None
    if pid is None:
        check_config(layout)
        pid = _start(layout)
    elif changed:
        check_config(layout)
        os.kill(pid, signal.SIGHUP)  # Prometheus reloads its files on SIGHUP
    alive = pid
    if not procs.wait_for(lambda: ready(layout), READY_TIMEOUT, lambda: procs.pid_alive(alive)):
        raise procs.failure("Prometheus", layout.log(NAME), "/-/ready did not answer")
    return f"{url(layout)}/consoles/imt.html  (alerts: {url(layout)}/alerts)"


def status(layout: Layout) -> tuple[bool, str]:
    return procs.describe(
        running_pid(layout), ready(layout), (layout.ports.prometheus,), f"{url(layout)}/alerts"
    )


def down(layout: Layout, wipe: bool = False) -> None:
    state = home(layout) if wipe else None
    procs.stop_daemon(running_pid(layout), layout.pidfile(NAME), state, timeout=20)
