"""Starts and stops the SMTP sink daemon (deploy/local/smtp_sink.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.local import procs
from deploy.local.layout import HOST, Layout
from deploy.local.tls import ensure_certificates

NAME = "smtp"
SCRIPT = Path(__file__).with_name("smtp_sink.py")
READY_TIMEOUT = 60.0  # a fresh machine starts Kafka, PostgreSQL and this at once on 2 cores


def maildir(layout: Layout) -> Path:
    return layout.state / "mail"


def web_url(layout: Layout) -> str:
    return f"http://{HOST}:{layout.ports.smtp_web}"


def running_pid(layout: Layout) -> int | None:
    # The maildir is unique to this state dir, so it tells our sink from another one.
    return procs.our_pid(layout.pidfile(NAME), f"--maildir {maildir(layout)}")


def _ready(layout: Layout) -> bool:
    return procs.port_open(layout.ports.smtp) and procs.port_open(layout.ports.smtp_web)


def _start(layout: Layout) -> int:
    procs.require_free(layout.ports.smtp, "SMTP sink", "IMT_SMTP_PORT")
    procs.require_free(layout.ports.smtp_web, "SMTP sink web", "IMT_SMTP_WEB_PORT")
    tls = ensure_certificates(layout.tls)
    argv = [
        sys.executable, str(SCRIPT),
        "--smtp-port", str(layout.ports.smtp), "--web-port", str(layout.ports.smtp_web),
        "--maildir", str(maildir(layout)),
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
    ]  # fmt: skip
    return procs.spawn(argv, layout.log(NAME), layout.pidfile(NAME), cwd=layout.state)


def up(layout: Layout) -> str:
    pid = running_pid(layout) or _start(layout)
    if not procs.wait_for(lambda: _ready(layout), READY_TIMEOUT, lambda: procs.pid_alive(pid)):
        raise procs.failure("SMTP sink", layout.log(NAME), "ports did not open")
    return f"smtp://{HOST}:{layout.ports.smtp} (STARTTLS)  viewer {web_url(layout)}/"


def status(layout: Layout) -> tuple[bool, str]:
    ports = (layout.ports.smtp, layout.ports.smtp_web)
    address = f"smtp://{HOST}:{layout.ports.smtp}  {web_url(layout)}/"
    return procs.describe(running_pid(layout), _ready(layout), ports, address)


def down(layout: Layout, wipe: bool = False) -> None:
    state = maildir(layout) if wipe else None
    procs.stop_daemon(running_pid(layout), layout.pidfile(NAME), state, timeout=10)
