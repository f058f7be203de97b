"""SMTP sink for local runs and tests: a real SMTP server that keeps every message.

Run: ``python deploy/local/smtp_sink.py --smtp-port 2525 --web-port 8025 --maildir DIR``.
Each message is stored as ``<n>-<uuid>.eml`` (bytes as received) with a ``.json`` sidecar
(envelope sender, recipients, subject, time). A small HTTP API on the web port lists them
and switches the failure mode, so tests can simulate an SMTP outage:

* ``GET /`` HTML list; ``GET /api/messages`` JSON list (``?to=<address>``, repeatable:
  only the messages for those recipients, case-insensitive); ``GET /api/messages/<id>``
  raw mail; ``DELETE /api/messages`` clears all;
* ``GET|POST /api/mode`` with ``{"mode": "accept" | "tempfail" | "permfail" |
  "lose-reply"}``. ``lose-reply`` keeps each message and then drops the connection
  without answering, as when a server's 250 is lost on the way back: the client cannot
  know whether the message arrived.

Only the standard library and aiosmtpd: this file runs on its own, outside the platform.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import email.parser
import email.policy
import html
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

log = logging.getLogger("smtp_sink")

HOST = "127.0.0.1"
# What the server answers to DATA in each mode (None: accept and store).
MODES: dict[str, str | None] = {
    "accept": None,
    "tempfail": "451 4.3.0 Try again later",
    "permfail": "550 5.1.1 Rejected",
    "lose-reply": None,
}
ID_PATTERN = re.compile(r"[0-9]{6,}-[0-9a-f]{32}")
MAX_BODY = 64 * 1024
DEFAULT_KEEP = 20_000  # messages kept across restarts; older ones are deleted at start


class Mailbox:
    """Messages on disk; written atomically so a reader never sees half a message.

    A developer's runs leave tens of thousands of messages behind (the benchmarks alone
    send thousands a run). Reading every one's metadata took ~30 s at start, longer
    than the stack waits for the ports; so the sink listens at once, and reads (and
    trims to the newest ``keep``) in the background. Readers of the list wait for it.
    """

    def __init__(self, folder: Path, keep: int = DEFAULT_KEEP) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # Mail holds sign-in and reset links: only the sink (the stack's user) reads it.
        folder.chmod(0o700)
        self.folder = folder
        self.keep = keep
        self.mode = "accept"
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._index: list[dict[str, Any]] = []
        # From the file names alone (fast): new messages number after every old one.
        self._next = 1 + max((int(p.stem.split("-")[0]) for p in self._sidecars()), default=0)

    def load(self) -> None:
        """Trim to the newest ``keep`` messages and read their metadata (a thread's job)."""
        try:
            sidecars = self._sidecars()
            for stale in sidecars[: max(0, len(sidecars) - self.keep)]:
                stale.unlink(missing_ok=True)
                stale.with_suffix(".eml").unlink(missing_ok=True)
            found = []
            for sidecar in sidecars[-self.keep :] if self.keep else []:
                with contextlib.suppress(OSError, ValueError):
                    found.append(json.loads(sidecar.read_text()))
            with self._lock:
                stored_meanwhile = {m["id"] for m in self._index}
                self._index = [m for m in found if m["id"] not in stored_meanwhile] + self._index
        finally:
            self._loaded.set()

    def _sidecars(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.json") if ID_PATTERN.fullmatch(p.stem))

    def _write(self, path: Path, data: bytes) -> None:
        # A new private file (0600), never through a link planted at its name.
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # else it would stay, named like no message
            raise

    def store(
        self, raw: bytes, mail_from: str | None, rcpt_tos: list[str], tls: bool = False
    ) -> str:
        with self._lock:
            number, self._next = self._next, self._next + 1
        ident = f"{number:06d}-{uuid.uuid4().hex}"
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
        meta = {
            "id": ident,
            "mail_from": mail_from,
            "rcpt_tos": list(rcpt_tos),
            "subject": str(headers.get("subject", "")),
            "received_at": dt.datetime.now(dt.UTC).isoformat(),
            "tls": tls,  # whether the session was encrypted (STARTTLS) when it came
        }
        self._write(self.folder / f"{ident}.eml", raw)
        # The sidecar comes last: a listed message always has its .eml.
        self._write(self.folder / f"{ident}.json", json.dumps(meta).encode())
        with self._lock:
            self._index.append(meta)
        return ident

    def messages(self) -> list[dict[str, Any]]:
        self._loaded.wait()
        with self._lock:
            return sorted(self._index, key=lambda m: str(m["id"]))

    def raw(self, ident: str) -> bytes | None:
        if not ID_PATTERN.fullmatch(ident):
            return None
        try:
            return (self.folder / f"{ident}.eml").read_bytes()
        except OSError:
            return None

    def clear(self) -> int:
        self._loaded.wait()
        with self._lock:
            self._index.clear()
        sidecars = self._sidecars()
        for sidecar in sidecars:
            sidecar.unlink(missing_ok=True)
            sidecar.with_suffix(".eml").unlink(missing_ok=True)
        return len(sidecars)


class Handler:
    """aiosmtpd hooks: store the message, or refuse it as the current mode says."""

    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = MODES[self.box.mode]
        if refusal:
            log.info("refused mail from %s: %s", envelope.mail_from, refusal)
            return refusal
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        ident = self.box.store(
            data, envelope.mail_from, envelope.rcpt_tos, tls=session.ssl is not None
        )
        log.info("stored %s for %s", ident, ", ".join(envelope.rcpt_tos))
        transport = server.transport
        if self.box.mode == "lose-reply" and isinstance(transport, asyncio.Transport):
            transport.abort()  # kept, but the client never hears so
        return f"250 2.0.0 Ok: queued as {ident}"


def accept_any_login(*_args: object) -> AuthResult:
    # Services may log in with configured credentials; a local sink takes any of them.
    return AuthResult(success=True)


def readable(raw: bytes) -> str:
    """A message as a developer reads it: its main headers and its text, decoded (the
    quoted-printable undone, so a mailed one-time link can be copied whole)."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    head = "".join(
        f"{name}: {message[name]}\n" for name in ("Date", "From", "To", "Subject") if message[name]
    )
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return f"{head}\n{text}"


def _html_page(messages: list[dict[str, Any]]) -> str:
    row = (
        "<tr><td>{time}</td><td>{to}</td><td><a href='/messages/{id}'>{subject}</a>"
        " (<a href='/api/messages/{id}'>raw</a>)</td></tr>"
    )
    rows = "".join(
        row.format(
            time=html.escape(m["received_at"]),
            to=html.escape(", ".join(m["rcpt_tos"])),
            id=html.escape(m["id"]),
            subject=html.escape(m["subject"] or "(no subject)"),
        )
        for m in reversed(messages)
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>SMTP sink</title>"
        f"<h1>SMTP sink: {len(messages)} message(s)</h1>"
        f"<table><tr><th>Received</th><th>To</th><th>Subject</th></tr>{rows}</table>"
    )


def _for(messages: list[dict[str, Any]], recipients: list[str] | None) -> list[dict[str, Any]]:
    """The messages for any of ``recipients`` (all of them when None)."""
    if recipients is None:
        return messages
    wanted = {r.casefold() for r in recipients}
    return [m for m in messages if wanted & {r.casefold() for r in m["rcpt_tos"]}]


class WebHandler(BaseHTTPRequestHandler):
    server_version = "smtp-sink"
    # Keep-alive: a test reading a run's mail one message at a time would otherwise
    # open a connection (and a thread) per message. Every answer has a Content-Length.
    protocol_version = "HTTP/1.1"
    # The headers and the body go in two writes: with Nagle's algorithm, the body would
    # wait for the client's delayed ACK of the headers (~40 ms an answer).
    disable_nagle_algorithm = True
    timeout = 60  # seconds: a connection left idle longer is closed (its thread ends)
    box: Mailbox  # set on the subclass made in serve_web

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/":
            page = _html_page(self.box.messages())
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/api/messages":
            self._json(200, _for(self.box.messages(), urllib.parse.parse_qs(query).get("to")))
        elif path == "/api/mode":
            self._json(200, {"mode": self.box.mode})
        elif path.startswith("/messages/"):
            raw = self.box.raw(path.removeprefix("/messages/"))
            if raw is None:
                self._json(404, {"error": "no such message"})
            else:
                self._send(200, readable(raw).encode(), "text/plain; charset=utf-8")
        elif path.startswith("/api/messages/"):
            raw = self.box.raw(path.removeprefix("/api/messages/"))
            if raw is None:
                self._json(404, {"error": "no such message"})
            else:
                self._send(200, raw, "message/rfc822")
        else:
            self._json(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if self.path == "/api/messages":
            self._json(200, {"deleted": self.box.clear()})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/api/mode":
            self._json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"error": "body too large"})
            return
        try:
            mode = json.loads(self.rfile.read(length) or b"{}").get("mode")
        except (ValueError, AttributeError):
            mode = None
        if mode not in MODES:
            self._json(400, {"error": f"mode must be one of {sorted(MODES)}"})
            return
        self.box.mode = mode
        log.info("mode is now %s", mode)
        self._json(200, {"mode": mode})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def serve_web(box: Mailbox, port: int) -> ThreadingHTTPServer:
    handler = type("BoundWebHandler", (WebHandler,), {"box": box})
    httpd = ThreadingHTTPServer((HOST, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="smtp-sink-web", daemon=True).start()
    return httpd


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve(args: argparse.Namespace) -> None:
    box = Mailbox(Path(args.maildir), keep=args.keep)
    handler = Handler(box)
    context = tls_context(args.tls_cert, args.tls_key)
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            handler, hostname="localhost", tls_context=context, enable_SMTPUTF8=True,
            authenticator=accept_any_login, auth_require_tls=False, loop=loop,
        )  # fmt: skip

    smtp = await loop.create_server(protocol, HOST, args.smtp_port)
    httpd = serve_web(box, args.web_port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("SMTP on %s:%s, web on http://%s:%s/, maildir %s",
             HOST, args.smtp_port, HOST, args.web_port, box.folder)  # fmt: skip
    threading.Thread(target=box.load, name="smtp-sink-load", daemon=True).start()
    await stop.wait()
    smtp.close()
    httpd.shutdown()
    await smtp.wait_closed()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-port", type=int, default=2525)
    parser.add_argument("--web-port", type=int, default=8025)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--tls-cert", help="PEM certificate chain; enables STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--keep", type=int, default=DEFAULT_KEEP, help="messages kept; older ones go at start"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
