"""The platform's service processes, declared by each service in ``services/<name>/Procfile``.

``make run`` hands them to honcho in the foreground; the test run starts them as
daemons with :func:`ensure_processes` (reusing any that ``make run`` already runs) and
waits for every API's ``/api/<service>/readyz`` on the API's own port (the gateway keeps
readiness, which names failing dependencies, from the public).

``make run`` holds a lock (:func:`claim_make_run`) for as long as it runs: its processes
are honcho's, which ends them all when one stops, so a test run that finds it
(:func:`make_run_active`) leaves them alone.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import shlex
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from deploy.local import procs
from deploy.local.gateway import UPSTREAMS
from deploy.local.layout import HOST, REPO_ROOT, Layout
from deploy.local.tls import tls_files

READY_TIMEOUT = 90.0
# How long a starting `make run` waits for the lock: a test run's make_run_active holds
# it for an instant.
CLAIM_SECONDS = 2.0


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


def use_stack_env() -> None:
    """The local stack's whereabouts in os.environ, unless set explicitly: for a program
    that builds the services' settings itself (the benchmarks)."""
    for name, value in stack_env(Layout.from_env()).items():
        os.environ.setdefault(name, value)


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
    reuses it rather than start a second copy. Its output goes to honcho (the terminal)
    and to ``logs/<name>.log``, where the runbook reads it, as after a test run."""
    return "".join(
        f"{name}: {_logged_exec(layout, name, command)}\n" for name, command in entries.items()
    )


def _logged_exec(layout: Layout, name: str, command: str) -> str:
    # Through a FIFO that tee reads, not a pipe: a pipeline would run the service in a
    # child of the shell, and the pid written would not be the service's. tee is in the
    # service's process group, which honcho stops with SIGTERM: it ignores that (and
    # Ctrl-C, a closed terminal, honcho gone) to log the service's last lines, and ends
    # with it.
    pidfile = shlex.quote(str(layout.pidfile(f"svc-{name}")))
    fifo = shlex.quote(str(output_fifo(layout, name)))
    log = shlex.quote(str(layout.log(name)))
    tee = f"(trap '' INT TERM HUP PIPE; exec tee -a {log}) < {fifo} &"
    return (
        f"echo $$ > {pidfile} && rm -f {fifo} && mkfifo -m 600 {fifo}"
        f" && {{ {tee} }} && exec {command} > {fifo} 2>&1"
    )


def output_fifo(layout: Layout, name: str) -> Path:
    """Where a process of ``make run`` writes its output, for tee to read."""
    return layout.run / f"svc-{name}.out"


def make_run_lock(layout: Layout) -> Path:
    return layout.run / "make-run.lock"


def claim_make_run(layout: Layout) -> TextIO | None:
    """The lock ``make run`` holds for its lifetime (close the file to let it go), or None
    when another ``make run`` on this state folder holds it. The folder is prepared."""
    layout.prepare()
    handle = make_run_lock(layout).open("a")
    deadline = time.monotonic() + CLAIM_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                return None
            time.sleep(0.1)


def make_run_active(layout: Layout) -> bool:
    """A ``make run`` holds this state folder's processes: a test must not stop one (honcho
    would end every other, and ``make run`` the infrastructure)."""
    try:
        fd = os.open(make_run_lock(layout), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: make run never ran on this state folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the lock, if this took it
    return False


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
                        env={**process_env(), **(env or {})},
                        exit_file=exit_file(layout, name))  # fmt: skip
            started.append(name)
    return started


def exit_file(layout: Layout, name: str) -> Path:
    """Where the exit code of the process :func:`ensure_processes` started is recorded."""
    return layout.run / f"svc-{name}.exit"


def exited(layout: Layout, name: str) -> str | None:
    """How the process started for ``name`` ended, if its pid file names one that no
    longer runs; None while it runs (or when nothing says it was started)."""
    pid = procs.read_pid(layout.pidfile(f"svc-{name}"))
    if pid is None or running(layout, name) is not None:
        return None
    code = procs.exit_code(exit_file(layout, name), pid)
    return f"its process (pid {pid}) exited" + ("" if code is None else f" with code {code}")


def stop_processes(names: Iterable[str] | None = None, layout: Layout | None = None) -> None:
    """Stop the named processes (all by default), all at once."""
    layout = layout or Layout.from_env()
    names = list(names if names is not None else procfile_entries())
    procs.stop_pids(pid for name in names if (pid := running(layout, name)) is not None)
    for name in names:
        layout.pidfile(f"svc-{name}").unlink(missing_ok=True)
        output_fifo(layout, name).unlink(missing_ok=True)


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
    """Wait until each service API answers ready (on its own port); fail at once, with
    its exit code and log, when its process has ended (an import error, a held port)."""
    layout = layout or Layout.from_env()
    for service in services:
        name, address = f"{service}-api", UPSTREAMS[service]
        deadline = time.monotonic() + READY_TIMEOUT
        while not api_ready(service):
            ended = exited(layout, name)
            if ended is not None and not api_ready(service):
                why = f"{ended} before {address} was ready"
                raise procs.failure(f"{service} API", layout.log(name), why)
            if time.monotonic() > deadline:
                raise procs.failure(f"{service} API", layout.log(name), f"{address} not ready")
            time.sleep(0.2)
