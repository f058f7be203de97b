"""The platform's service processes, declared by each service in ``services/<name>/Procfile``.

``make run`` hands them to honcho in the foreground; the test run starts them as
daemons with :func:`ensure_processes` (reusing any that ``make run`` already runs) and
waits for every API's ``/api/<service>/readyz`` on the API's own port (the gateway keeps
readiness, which names failing dependencies, from the public).
"""

from __future__ import annotations

import http.client
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from deploy.local import procs
from deploy.local.gateway import UPSTREAMS
from deploy.local.layout import REPO_ROOT, Layout

READY_TIMEOUT = 90.0


def procfile_entries(root: Path = REPO_ROOT) -> dict[str, str]:
    """``process name -> command`` from every service's Procfile, in service order."""
    entries: dict[str, str] = {}
    for procfile in sorted(root.glob("services/*/Procfile")):
        for line in procfile.read_text().splitlines():
            name, sep, command = line.partition(":")
            if sep and name.strip() and not name.lstrip().startswith("#"):
                entries[name.strip()] = command.strip()
    return entries


def process_env() -> dict[str, str]:
    """The environment service processes run with: the venv first on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
    }


def running(layout: Layout, name: str) -> int | None:
    """The pid of a process started for ``name``, if it still runs that command.

    The command's module (``-m services.accounts.api``) is the marker, so a recycled pid
    (after a reboot, or long after) is never mistaken for the service.
    """
    command = procfile_entries().get(name, "")
    marker = command.split(" ", 1)[1] if command.startswith("python ") else command
    return procs.our_pid(layout.pidfile(f"svc-{name}"), marker)


def ensure_processes(
    names: Iterable[str] | None = None,
    layout: Layout | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Start the named processes (all by default) that are not running, with ``env``
    over the usual environment; return those started."""
    layout = layout or Layout.from_env()
    entries = procfile_entries()
    started = []
    for name in names if names is not None else entries:
        if running(layout, name) is None:
            argv = ["/bin/sh", "-c", f"exec {entries[name]}"]
            procs.spawn(argv, layout.log(name), layout.pidfile(f"svc-{name}"), cwd=REPO_ROOT,
                        env={**process_env(), **(env or {})})  # fmt: skip
            started.append(name)
    return started


def stop_processes(names: Iterable[str] | None = None, layout: Layout | None = None) -> None:
    layout = layout or Layout.from_env()
    for name in names if names is not None else procfile_entries():
        pid = running(layout, name)
        if pid is not None:
            procs.stop_pid(pid)
        layout.pidfile(f"svc-{name}").unlink(missing_ok=True)


def api_ready(service: str) -> bool:
    """The API's readiness, asked on its own port: the gateway answers 404 for it."""
    host, _, port = UPSTREAMS[service].rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", f"/api/{service}/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_for_apis(services: Iterable[str], layout: Layout | None = None) -> None:
    """Wait until each service API answers ready (on its own port)."""
    layout = layout or Layout.from_env()
    for service in services:
        deadline = time.monotonic() + READY_TIMEOUT
        while not api_ready(service):
            if time.monotonic() > deadline:
                log = layout.log(f"{service}-api")
                raise procs.failure(f"{service} API", log, f"{UPSTREAMS[service]} not ready")
            time.sleep(0.2)
