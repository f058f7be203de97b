"""Local infrastructure of the platform: Kafka, PostgreSQL, an SMTP sink, the gateway and
Prometheus.

Usage (from the repo root)::

    .venv/bin/python deploy/local/stack.py {up,down,status,topics} [--only kafka,postgres,...]
    .venv/bin/python deploy/local/stack.py down --wipe     # also delete every state file
    .venv/bin/python deploy/local/stack.py install          # Debian packages only, as root

Daemons listen on 127.0.0.1 only and keep their state in $IMT_STATE_DIR (default
/tmp/imt-privacy): logs in logs/<name>.log, pid files in run/, certificates in tls/.
``up`` is idempotent: what already runs (and is ours) is reused. Tests call
:func:`ensure_up` and :func:`shut_down` in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # As a script, sys.path[0] is deploy/local: replace it by the repo root so that
    # `deploy.local` and `shared` import, and kafka.py here never shadows a real package.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import argparse
import asyncio
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from deploy.local import browser, gateway, kafka, postgres, procs, prometheus, smtp_control
from deploy.local.layout import HOST, Layout, require_private
from deploy.local.procs import StackError
from deploy.local.tls import ensure_certificates, tls_files

__all__ = [
    "COMPONENTS",
    "PACKAGES",
    "StackError",
    "endpoints",
    "ensure_up",
    "install_missing",
    "missing_packages",
    "shut_down",
    "status",
    "topics",
]


@dataclass(frozen=True)
class Component:
    up: Callable[[Layout], str]
    down: Callable[[Layout, bool], None]
    status: Callable[[Layout], tuple[bool, str]]


# Start order; stop order is the reverse.
COMPONENTS: dict[str, Component] = {
    "postgres": Component(postgres.up, postgres.down, postgres.status),
    "kafka": Component(kafka.up, kafka.down, kafka.status),
    "smtp": Component(smtp_control.up, smtp_control.down, smtp_control.status),
    "gateway": Component(gateway.up, gateway.down, gateway.status),
    "prometheus": Component(prometheus.up, prometheus.down, prometheus.status),
}


# Debian packages the stack and the page tests run, each with how to find it installed.
# `make test` installs the missing ones in one apt-get run before pytest starts, so that
# a fresh machine's downloads never count against a test's time limit.
PACKAGES: dict[str, Callable[[], object]] = {
    "postgresql": postgres.bin_dir,
    "nginx": gateway.find_binary,
    "prometheus": prometheus.find_binary,
    "chromium": browser.find_binary,
}


def missing_packages() -> list[str]:
    return [package for package, find in PACKAGES.items() if find() is None]


def install_missing() -> list[str]:
    """Install (as root) the packages not found yet; returns their names."""
    missing = missing_packages()
    if missing:
        procs.apt_install(missing, ", ".join(missing))
    return missing


def _select(components: Iterable[str] | None) -> list[str]:
    wanted = list(COMPONENTS) if components is None else list(components)
    unknown = sorted(set(wanted) - set(COMPONENTS))
    if unknown:
        raise StackError(
            f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}"
        )
    return [name for name in COMPONENTS if name in wanted]


def ensure_up(
    components: Iterable[str] | None = None, layout: Layout | None = None
) -> dict[str, str]:
    """Start what is not running yet and wait until all is ready; returns name -> address.

    Safe to call from several processes at once (a lock file serialises them) and from
    inside a running event loop (each component runs in its own thread).
    """
    names, layout = _select(components), layout or Layout.from_env()
    layout.prepare()
    with procs.locked(layout.run / "stack.lock"):
        # Made once here: every component presents it (Kafka's SSL listener, PostgreSQL,
        # the SMTP sink's STARTTLS, the gateway), and they start in parallel.
        ensure_certificates(layout.tls)
        addresses, failed = _start_all(names, layout)
        procs.write_atomic(layout.state / "endpoints.json", json.dumps(endpoints(layout), indent=2))
    if failed:
        message = "\n".join(
            str(exc) if isinstance(exc, StackError) else f"{name}: {exc!r}"
            for name, exc in failed.items()
        )
        raise StackError(message) from next(iter(failed.values()))
    return {name: addresses[name] for name in names}


def _start_all(names: list[str], layout: Layout) -> tuple[dict[str, str], dict[str, BaseException]]:
    """Each component's up in its own thread, all waited for: (addresses, failures).

    Interrupted (Ctrl-C), the threads still running would go on to start daemons after
    the caller stopped everything: a component not begun yet never begins, those running
    are told to start nothing more (procs.CANCEL, checked before every command, install
    and wait), and all are waited for, so that the caller's shut_down then stops
    whatever did start. Only flags and sleeps here: a KeyboardInterrupt can land
    anywhere, and a lock it interrupts may stay held.
    """
    began = {name: threading.Event() for name in names}
    ended = {name: threading.Event() for name in names}
    interrupted = threading.Event()
    addresses: dict[str, str] = {}
    failures: dict[str, BaseException] = {}

    def start(name: str) -> None:
        began[name].set()  # before looking at interrupted: see the wait below
        try:
            if not interrupted.is_set():
                addresses[name] = COMPONENTS[name].up(layout)
        except BaseException as exc:
            failures[name] = exc
        finally:
            ended[name].set()

    def all_ended(names: Iterable[str]) -> bool:
        return all(ended[name].is_set() for name in names)

    try:
        for name in names:
            threading.Thread(target=start, args=(name,), name=f"up-{name}").start()
        while not all_ended(names):
            time.sleep(0.05)
    except BaseException:
        interrupted.set()
        procs.CANCEL.set()
        try:
            # A thread that had not begun sees interrupted and begins nothing.
            running = [name for name in names if began[name].is_set()]
            while True:
                try:
                    while not all_ended(running):
                        time.sleep(0.05)
                    break
                except KeyboardInterrupt:
                    continue  # another Ctrl-C: the threads must still end first
        finally:
            procs.CANCEL.clear()
        raise
    return addresses, {name: failures[name] for name in names if name in failures}


def endpoints(layout: Layout | None = None) -> dict[str, str]:
    """Addresses and files other tools need; `up` also writes them to endpoints.json."""
    layout = layout or Layout.from_env()
    ports = layout.ports
    return {
        "kafka_bootstrap": kafka.bootstrap(layout),
        "postgres": f"{HOST}:{ports.postgres}",
        "postgres_admin_role": postgres.ADMIN_ROLE,
        "smtp": f"{HOST}:{ports.smtp}",
        "smtp_web": smtp_control.web_url(layout),
        "gateway_http": f"http://{HOST}:{ports.gateway}",
        "gateway_https": f"https://localhost:{ports.gateway_tls}",
        "prometheus": prometheus.url(layout),
        "ca_cert": str(tls_files(layout.tls).ca),
        "logs": str(layout.logs),
    }


def shut_down(
    components: Iterable[str] | None = None, wipe: bool = False, layout: Layout | None = None
) -> None:
    """Stop components (SIGTERM, then SIGKILL); wipe also deletes their state."""
    names, layout = _select(components), layout or Layout.from_env()
    if not layout.state.exists():
        return
    # Reused, so checked like prepare() does: never lock, stop or wipe in another's folder.
    require_private(layout.state)
    with procs.locked(layout.run / "stack.lock"):
        for name in reversed(names):
            COMPONENTS[name].down(layout, wipe)
    if wipe and len(names) == len(COMPONENTS):
        shutil.rmtree(layout.state, ignore_errors=True)


def status(
    components: Iterable[str] | None = None, layout: Layout | None = None
) -> dict[str, tuple[bool, str]]:
    """name -> (running and ours, one-line description)."""
    layout = layout or Layout.from_env()
    return {name: COMPONENTS[name].status(layout) for name in _select(components)}


def topics(layout: Layout | None = None) -> list[kafka.TopicInfo]:
    """Topics on the running broker with the settings they were created with."""
    return asyncio.run(kafka.describe_topics(layout or Layout.from_env()))


def _say(text: str, stream: TextIO = sys.stdout) -> None:
    print(text, file=stream)


def _install_or_warn() -> None:
    """Install what is missing; as another user than root, say what and go on."""
    missing = missing_packages()
    if missing and not procs.is_root():
        # Not ours to install: the tests that need them say so when they run.
        command = f"apt-get install -y --no-install-recommends {' '.join(missing)}"
        _say(f"warning: {', '.join(missing)} missing; as root: {command}", sys.stderr)
        return
    installed = install_missing()
    _say(f"installed {', '.join(installed)}" if installed else "packages already installed")


def _print_topics() -> None:
    shown = ("cleanup.policy", "retention.ms", "min.insync.replicas")
    for info in topics():
        settings = " ".join(f"{k}={info.config[k]}" for k in shown if k in info.config)
        others = sorted(k for k in info.config if k not in shown)
        extra = f" (+{', '.join(others)})" if others else ""
        _say(f"{info.name:28} partitions={info.partitions:<3} {settings}{extra}")


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        for name, address in ensure_up(args.only).items():
            _say(f"ready  {name:10} {address}")
        _say(f"state  {Layout.from_env().state}  (logs/, run/, tls/ca.pem, endpoints.json)")
        return 0
    if args.command == "down":
        shut_down(args.only, wipe=args.wipe)
        _say("stopped" + (" and wiped" if args.wipe else " (data kept; --wipe deletes it)"))
        return 0
    if args.command == "install":
        _install_or_warn()
        return 0
    if args.command == "status":
        states = status(args.only)
        for name, (_running, line) in states.items():
            _say(f"{name:10} {line}")
        return 0 if all(running for running, _ in states.values()) else 3
    _print_topics()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "topics", "install"])
    parser.add_argument(
        "--only",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        help=f"comma-separated subset of {','.join(COMPONENTS)}",
    )
    parser.add_argument("--wipe", action="store_true", help="with down: delete state too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # aiokafka logs every refused connection while the broker boots; that is expected.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return _run(args)
    except StackError as exc:
        _say(f"error: {exc}", sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
