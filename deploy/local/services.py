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
from deploy.local.layout import HOST, REPO_ROOT, Layout
from deploy.local.tls import tls_files

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


def stack_env(layout: Layout) -> dict[str, str]:
    """Where the local stack is, in the services' own settings: a port or state folder
    moved with IMT_KAFKA_PORT, IMT_STATE_DIR and the like moves the services with it."""
    ports = layout.ports
    return {
        "IMT_KAFKA_BOOTSTRAP": f"{HOST}:{ports.kafka}",
        "IMT_POSTGRES_PORT": str(ports.postgres),
        "IMT_NOTIFIER_SMTP_PORT": str(ports.smtp),
        "IMT_NOTIFIER_SMTP_CAFILE": str(tls_files(layout.tls).ca),
        "IMT_ACCOUNTS_PUBLIC_URL": f"http://localhost:{ports.gateway}",
        "IMT_NOTIFIER_PUBLIC_BASE_URL": f"https://localhost:{ports.gateway_tls}",
    }


def process_env() -> dict[str, str]:
    """The environment service processes run with: the venv first on PATH, the local
    stack's whereabouts unless set explicitly."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **stack_env(Layout.from_env()),
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
    }


def honcho_procfile(layout: Layout, entries: Mapping[str, str]) -> str:
    """The Procfile ``make run`` hands honcho: each process first writes its pid where
    :func:`running` looks (the shell's pid, which ``exec`` gives to the service), so
    ``make stop`` finds it even after honcho died (a closed terminal) and a test run
    reuses it rather than start a second copy."""
    return "".join(
        f"{name}: echo $$ > {layout.pidfile(f'svc-{name}')} && exec {command}\n"
        for name, command in entries.items()
    )


def require_free_api_ports() -> None:
    """Each API's port is free (or already held by our own process, which the caller
    stops first): else the user is told which, rather than see the API die at start."""
    for service, address in UPSTREAMS.items():
        port = int(address.rpartition(":")[2])
        if procs.port_open(port):
            raise procs.StackError(
                f"{service} API: {address} is already used by another program (not ours);"
                f" stop it (`ss -ltnp 'sport = :{port}'` names it), or `make stop` if it is"
                " a service left from an earlier run"
            )


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
