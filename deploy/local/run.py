"""``make run``: the whole platform in the foreground; Ctrl-C stops everything.

Starts the infrastructure (Kafka, PostgreSQL, the SMTP sink, the nginx gateway,
Prometheus), prints where everything is, then runs every service process of
``services/*/Procfile`` under honcho. When honcho ends (Ctrl-C), the infrastructure is
stopped too, data kept. A SIGINT or SIGTERM sent to this process alone (a supervisor,
``kill``) stops honcho's processes as well. ``--stop`` stops whatever a test run or an
earlier ``make run`` left behind.

One ``make run`` per state folder: it holds a lock in run/ for its lifetime, so a second
one exits at once (rather than stop the first's services), and a test run leaves its
processes alone (services.make_run_active).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import argparse
import contextlib
import signal
import subprocess
import time
from typing import TextIO

from deploy.local import gateway, services, stack
from deploy.local.layout import HOST, REPO_ROOT, Layout
from deploy.local.procs import StackError

# After a terminal's Ctrl-C, honcho ends on its own within this; otherwise we stop it.
HONCHO_OWN_STOP_SECONDS = 5.0


def print_urls(layout: Layout, addresses: dict[str, str]) -> None:
    ports = layout.ports
    print("\niMT privacy platform is starting:")
    for name, address in addresses.items():
        print(f"  {name:<10} {address}")
    for service in sorted({n.split("-")[0] for n in services.procfile_entries()}):
        print(f"  {service:<10} http://{HOST}:{ports.gateway}/api/{service}/openapi.json")
    print(f"  mail       http://{HOST}:{ports.smtp_web}/  (every email the platform sends)")
    metrics = ", ".join(f"http://{address}/metrics" for address in gateway.UPSTREAMS.values())
    print(f"  metrics    {metrics}")
    print("             (Prometheus above scrapes them and evaluates the alert rules;")
    print("              what each alert means and what to do: docs/operations.md)")
    print("Ctrl-C stops everything.\n", flush=True)


def run_services(layout: Layout) -> int:
    entries = services.procfile_entries()
    if not entries:
        print("no service declares processes yet (services/*/Procfile); infrastructure only")
        while True:
            time.sleep(3600)
    procfile = layout.state / "Procfile"
    procfile.write_text(services.honcho_procfile(layout, entries))
    honcho = str(Path(sys.executable).parent / "honcho")
    command = [honcho, "start", "-f", str(procfile), "-d", str(REPO_ROOT)]
    proc = subprocess.Popen(command, env=services.process_env())  # noqa: S603
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop_honcho(proc)
        raise


def _stop_honcho(proc: subprocess.Popen[bytes]) -> None:
    """A terminal's Ctrl-C reached honcho too, and it is stopping its processes; a
    signal sent to this process alone did not: then honcho is told to stop them."""
    try:
        proc.wait(timeout=HONCHO_OWN_STOP_SECONDS)
        return
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print, unless the terminal is gone: closed, it fails every write (EIO) before its
    SIGHUP arrives, and what was to be said must not stop the stop that follows."""
    with contextlib.suppress(OSError):
        print(text, file=stream or sys.stdout, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="make run")
    parser.add_argument("--stop", action="store_true", help="stop everything and exit")
    args = parser.parse_args()
    layout = Layout.from_env()
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: infrastructure too
    signal.signal(signal.SIGHUP, _interrupt)  # the terminal closed: the same
    if args.stop:
        services.stop_processes(layout=layout)
        stack.shut_down(layout=layout)
        return 0
    try:
        claim = services.claim_make_run(layout)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if claim is None:
        print(
            f"error: another `make run` is running on {layout.state} (it holds "
            f"{services.make_run_lock(layout)}); stop it first (Ctrl-C in its terminal, or "
            "`make stop`), or give this one another IMT_STATE_DIR and ports",
            file=sys.stderr,
        )
        return 2
    with claim:
        return _run(layout)


def _run(layout: Layout) -> int:
    try:
        services.stop_processes(layout=layout)  # daemons a test run left: honcho owns them now
        if services.procfile_entries():
            # Before the long start of the infrastructure, not after it (nothing to stop).
            services.require_free_api_ports()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    try:
        print_urls(layout, stack.ensure_up(layout=layout))
        return run_services(layout)
    except StackError as exc:
        _say(f"error: {exc}", sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        # The stop must finish: a second Ctrl-C, or a signal a stopping process sends
        # its process group (ours, under honcho), would leave daemons running.
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
        _say("\nstopping the infrastructure (data kept)...")
        # Those honcho did not stop (it died first, on a closed terminal, say).
        services.stop_processes(layout=layout)
        stack.shut_down(layout=layout)


if __name__ == "__main__":
    sys.exit(main())
