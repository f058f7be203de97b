"""Transports: the compliance gate in front of whatever carries the mail (SMTP here).

:class:`GatedTransport` is the only way the notifier sends: it checks every
:class:`OutgoingEmail` with :func:`compliance.check` and hands only compliant ones to
the transport behind it, so a third-party provider plugged in later passes the same
gate (P-31). :class:`SmtpTransport` is one aiosmtplib connection (STARTTLS or implicit
TLS, verified against the configured CA); several run in parallel because aiosmtplib
has no pipelining.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib

from services.notifier.config import NotifierSettings
from services.notifier.domain import compliance
from services.notifier.domain.compliance import GatePolicy, OutgoingEmail
from services.notifier.domain.rules import smtp_failure_is_temporary


class TemporaryFailure(Exception):
    """SMTP 4xx or no connection: try again later."""


class PermanentFailure(Exception):
    """SMTP 5xx: the server will never take this message."""


class Refused(Exception):
    """The compliance gate refused the message; it was not sent."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class Transport(Protocol):
    async def send(self, wire: Wire) -> None: ...
    async def close(self) -> None: ...


def gate_policy(settings: NotifierSettings) -> GatePolicy:
    return GatePolicy(
        from_transactional=settings.notifier_from_transactional,
        from_marketing=settings.notifier_from_marketing,
        reply_to=settings.notifier_reply_to,
        postal_address=settings.notifier_postal_address,
        ad_label=settings.notifier_ad_label,
        list_id=settings.notifier_list_id,
        link_hosts=frozenset(h.casefold() for h in settings.notifier_link_hosts),
    )


@dataclass(frozen=True)
class Wire:
    """A checked email as it goes on the wire: envelope addresses and the MIME bytes."""

    sender: str
    recipient: str
    data: bytes


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable bodies (base64 is the utf-8 default)


def _header(value: str) -> str:
    """Non-ASCII header values as RFC 2047 encoded words."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def build_message(email: OutgoingEmail, message_id: str) -> Wire:
    """The MIME message (text + HTML alternative) of a checked email.

    Built with the classic ``email.mime`` classes and serialised once: the modern
    ``EmailMessage`` API parses every header it is given and cost about as much CPU
    as everything else on the send path together.
    """
    message = MIMEMultipart("alternative")
    message["From"] = _header(email.sender)
    message["To"] = email.to
    message["Reply-To"] = _header(email.reply_to)
    message["Subject"] = _header(email.subject)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    for name, value in email.headers.items():
        message[name] = _header(value)
    message.attach(MIMEText(email.text, "plain", _UTF8_QP))  # type: ignore[arg-type]
    message.attach(MIMEText(email.html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return Wire(parseaddr(email.sender)[1], parseaddr(email.to)[1], message.as_bytes())


class GatedTransport:
    """The compliance gate, then the transport: nothing reaches it unchecked."""

    def __init__(self, transport: Transport, policy: GatePolicy) -> None:
        self._transport = transport
        self._policy = policy

    async def send(self, email: OutgoingEmail, message_id: str) -> None:
        reasons = compliance.check(email, self._policy)
        if reasons:
            raise Refused(reasons)
        if parseaddr(email.to)[1] == "":
            raise Refused(["no recipient address"])
        await self._transport.send(build_message(email, message_id))

    async def close(self) -> None:
        await self._transport.close()


def tls_context(settings: NotifierSettings) -> ssl.SSLContext | None:
    if settings.notifier_smtp_security == "none":
        return None
    context = ssl.create_default_context(cafile=settings.notifier_smtp_cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SmtpTransport:
    """One SMTP connection, opened lazily and reopened after any failure."""

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._context = tls_context(settings)
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        client = aiosmtplib.SMTP(
            hostname=s.notifier_smtp_host,
            port=s.notifier_smtp_port,
            use_tls=s.notifier_smtp_security == "tls",
            start_tls=s.notifier_smtp_security == "starttls",
            tls_context=self._context,
            timeout=s.notifier_smtp_timeout_seconds,
            username=s.notifier_smtp_username,
            password=(
                s.notifier_smtp_password.get_secret_value() if s.notifier_smtp_password else None
            ),
        )
        await client.connect()
        return client

    async def send(self, wire: Wire) -> None:
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            errors, _ = await self._client.sendmail(wire.sender, [wire.recipient], wire.data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self.close()
            codes = [r.code for r in exc.recipients]
            if all(smtp_failure_is_temporary(c) for c in codes):
                raise TemporaryFailure(f"recipient refused ({codes})") from None
            raise PermanentFailure(f"recipient refused ({codes})") from None
        except aiosmtplib.SMTPResponseException as exc:
            await self.close()
            reason = f"SMTP {exc.code}: {exc.message[:200]}"
            if smtp_failure_is_temporary(exc.code):
                raise TemporaryFailure(reason) from None
            raise PermanentFailure(reason) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise TemporaryFailure(f"SMTP connection: {type(exc).__name__}") from None
        if errors:  # a single recipient per message: any error is that recipient's
            codes = [e.code for e in errors.values()]
            if all(smtp_failure_is_temporary(c) for c in codes):
                raise TemporaryFailure(f"recipient refused ({codes})")
            raise PermanentFailure(f"recipient refused ({codes})")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
