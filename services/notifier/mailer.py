"""Transports: the compliance gate in front of whatever carries the mail (SMTP here).

:class:`GatedTransport` is the only way the notifier sends: it checks every
:class:`OutgoingEmail` with :func:`compliance.check` and hands only compliant ones to
the transport behind it, so a third-party provider plugged in later passes the same
gate (P-31). :class:`SmtpTransport` is one aiosmtplib connection (STARTTLS or implicit
TLS, verified against the configured CA); several run in parallel because aiosmtplib
has no pipelining.

A transport has the sender record the hand-over (a mark committed in the database)
once its connection is up, while the envelope (MAIL, RCPT) goes, and sends the message
(DATA) only once it is recorded: the mark always precedes any chance that the server
has the message, and its round trip overlaps the server's. A connection that cannot be
opened leaves no mark: the message never left, and is retried. Once DATA has begun, a
failure without an answer from the server is :class:`InDoubt`, not a retry: the server
may have taken the message, and a second copy would be an email sent twice.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from typing import Protocol

import aiosmtplib
import idna

from services.notifier.config import NotifierSettings
from services.notifier.domain import compliance
from services.notifier.domain.compliance import GatePolicy, OutgoingEmail
from services.notifier.domain.rules import smtp_failure_is_temporary
from shared.pii import redact


class TemporaryFailure(Exception):
    """SMTP 4xx or no connection: try again later."""


class PermanentFailure(Exception):
    """SMTP 5xx: the server will never take this message."""


class InDoubt(Exception):
    """The connection failed after the message was handed over: it may have arrived."""


class NotSent(Exception):
    """An unexpected error before DATA: whether or not the hand-over was marked, the
    message did not leave, so it may be sent again."""


class Refused(Exception):
    """The compliance gate refused the message; it was not sent."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


#: Called by a transport before the message (DATA) goes, while the envelope is sent: it
#: records the hand-over durably, or raises and the message is not sent.
HandOver = Callable[[], Awaitable[None]]


class Transport(Protocol):
    async def send(self, wire: Wire, hand_over: HandOver) -> None: ...
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
    # An address with a non-ASCII local part (an internationalised domain alone goes in
    # its IDNA form): sent with SMTPUTF8 (RFC 6531).
    utf8: bool = False


_MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_FOLD_POINTS = re.compile(r" +[^ ]+")  # a fold goes before a run of spaces, never inside a word
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR and LF in particular inject headers
_PART_HEADERS = (
    'Content-Type: text/{}; charset="utf-8"\n'
    "MIME-Version: 1.0\n"
    "Content-Transfer-Encoding: quoted-printable\n\n"
)


def _header(name: str, value: str) -> str:
    """One header line: folded at spaces; non-ASCII values as RFC 2047 encoded words."""
    if not value.isascii():
        return f"{name}: {Header(value, 'utf-8', header_name=name).encode()}"
    if _CONTROL.search(value):
        raise Refused([f"the {name} header holds a control character"])
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE:
        return line
    lines, current = [], f"{name}:"
    for token in _FOLD_POINTS.findall(" " + value):
        if current != f"{name}:" and len(current) + len(token) > _MAX_LINE:
            lines.append(current)
            current = token
        else:
            current += token
    lines.append(current + value[len(value.rstrip(" ")) :])  # trailing spaces, if any
    return "\n".join(lines)


def _text_header(name: str, value: str) -> str:
    """A header of free text (the Subject), as :func:`_header` writes it, except that an
    ASCII value holding ``=?`` goes as an encoded word too: as is, a client decodes what
    reads as one, and a title typed as ``=?utf-8?q?Re=3A_Your_order?=`` would show as
    "Re: Your order" (P-28). Encoded, it shows as typed."""
    if "=?" not in value or not value.isascii():
        return _header(name, value)
    if _CONTROL.search(value):
        raise Refused([f"the {name} header holds a control character"])
    return f"{name}: {Header(value, 'utf-8', header_name=name).encode()}"


# Headers of the form "display name <address>": From and Reply-To, and List-Id, whose
# "<list-id>" RFC 2919 writes the same way.
_NAMED_HEADERS = frozenset({"From", "Reply-To", "List-Id"})


@functools.lru_cache(maxsize=16)
def _named_header(name: str, value: str) -> str:
    """A ``name <address>`` header: only the display name may be an RFC 2047 encoded
    word (RFC 2047 section 5: never an address), so a non-ASCII name is encoded alone.
    Memoised: these are configured business values, the same on every email."""
    if value.isascii():
        return _header(name, value)
    if _CONTROL.search(value):
        raise Refused([f"the {name} header holds a control character"])
    display, address = parseaddr(value)
    if not address:
        raise Refused([f"the {name} header holds no <address>"])
    if not address.isascii():  # internationalised: UTF-8 as is (RFC 6532), as for To
        return f"{name}: {value}"
    if display.isascii():  # what was not ASCII was a comment, which parseaddr drops
        return _header(name, formataddr((display, address)))
    # Header, not formataddr's one encoded word: a long name is split into several
    # words of at most 75 characters each (RFC 2047 section 2).
    return f"{name}: {Header(display, 'utf-8', header_name=name).encode()} <{address}>"


def _quoted_printable(text: str) -> str:
    # binascii's C encoder: for "\n" line ends the same output as email.quoprimime (what
    # email.mime.text uses for a utf-8/QP charset), at a tenth of its cost.
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")


# A bare addr-spec of dot-atoms, which parseaddr would return unchanged (it costs as
# much as building the rest of the message); anything else goes through parseaddr.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


# What an envelope address may hold as is (ASCII, or UTF-8 with SMTPUTF8): nothing that
# would end it or start another command.
_ENVELOPE_SAFE = re.compile(
    r'[^\s<>()\[\]\\,;:"@\x00-\x1f\x7f]+@[^\s<>()\[\]\\,;:"@\x00-\x1f\x7f]+'
)


def _ascii_domain(to: str) -> str:
    """``to`` with its domain in its IDNA form (``jane@xn--bcher-kva.de``) when only the
    domain is internationalised: the same mailbox, which any server takes, where the
    UTF-8 form needs SMTPUTF8, and a server without it would refuse the address for
    good. A non-ASCII local part has no ASCII form: it stays, and needs SMTPUTF8."""
    local, at, domain = to.rpartition("@")
    if not at or domain.isascii() or not local.isascii():
        return to
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:  # no valid IDNA form: sent as is, with SMTPUTF8
        return to


def _envelope_recipient(to: str) -> str:
    return to if _BARE_ADDRESS.fullmatch(to) else parseaddr(to)[1]


def _to_header(to: str) -> str:
    """An internationalised address (its local part: :func:`_ascii_domain` gave any
    other its ASCII form) goes as UTF-8 (RFC 6532; the message is then sent with
    SMTPUTF8): an address may not be an RFC 2047 encoded word."""
    if to.isascii():
        return _header("To", to)
    if _CONTROL.search(to):
        raise Refused(["the To header holds a control character"])
    return f"To: {to}"


def build_message(email: OutgoingEmail, message_id: str) -> Wire:
    """The MIME message (text + HTML alternative) of a checked email, serialised by hand.

    The ``email`` package's generator folds every header through ``Header`` and compiles
    a regular expression per message to pick a boundary: together about half a
    millisecond per email, more than the SMTP client itself. The shape here is the one
    ``MIMEMultipart`` + ``MIMEText`` produce (tests parse both and compare); the boundary
    holds ``=_``, which quoted-printable bodies can never contain (a literal ``=`` is
    always ``=3D`` there), so it needs no search through the bodies.
    """
    boundary = f"=_{os.urandom(16).hex()}"
    to = _ascii_domain(email.to)
    head = [
        _header("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        "MIME-Version: 1.0",
        _named_header("From", email.sender),
        _to_header(to),
        _named_header("Reply-To", email.reply_to),
        _text_header("Subject", email.subject),
        _header("Date", format_datetime(datetime.now(UTC))),
        _header("Message-ID", message_id),
        *(
            (_named_header if name in _NAMED_HEADERS else _header)(name, value)
            for name, value in email.headers.items()
        ),
    ]
    data = "".join(
        (
            "\n".join(head),
            f"\n\n--{boundary}\n",
            _PART_HEADERS.format("plain"),
            _quoted_printable(email.text),
            f"\n--{boundary}\n",
            _PART_HEADERS.format("html"),
            _quoted_printable(email.html),
            f"\n--{boundary}--\n",
        )
    )
    sender, recipient = _envelope_sender(email.sender), _envelope_recipient(to)
    utf8 = not (sender.isascii() and recipient.isascii())
    return Wire(sender, recipient, data.encode("utf-8"), utf8)


@functools.lru_cache(maxsize=16)
def _envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]  # a configured business address: the same on every email


class GatedTransport:
    """The compliance gate, then the transport: nothing reaches it unchecked."""

    def __init__(self, transport: Transport, policy: GatePolicy) -> None:
        self._transport = transport
        self._policy = policy

    async def send(self, email: OutgoingEmail, message_id: str, hand_over: HandOver) -> None:
        await self._transport.send(self._checked(email, message_id), hand_over)

    def _checked(self, email: OutgoingEmail, message_id: str) -> Wire:
        """The email as it goes on the wire, or Refused.

        An error in the gate or in building the message is a refusal too: both read only
        the email, so every retry would fail alike, each one spending a send slot and a
        reconnect until the last attempt, and the email would end as ``failed`` without
        the gate's word on it.
        """
        try:
            reasons = compliance.check(email, self._policy)
            if reasons:
                raise Refused(reasons)
            wire = build_message(email, message_id)
        except Refused:
            raise
        except Exception as exc:
            raise Refused([f"the gate could not check it: {type(exc).__name__}"]) from exc
        if wire.recipient == "":
            raise Refused(["no recipient address"])
        if not _ENVELOPE_SAFE.fullmatch(wire.recipient):
            raise Refused(["the recipient address cannot go in an SMTP envelope as it is"])
        return wire

    async def close(self) -> None:
        await self._transport.close()


def tls_context(settings: NotifierSettings) -> ssl.SSLContext | None:
    if settings.notifier_smtp_security == "none":
        return None
    context = ssl.create_default_context(cafile=settings.notifier_smtp_cafile or None)
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

    async def send(self, wire: Wire, hand_over: HandOver) -> None:
        # Connected (TLS and login included) before the mark is asked for: a connect
        # that times out leaves no mark, and so no lease ending on a marked row that
        # never left (a dead letter in doubt, which no bulk replay sends).
        try:
            client = await self._connected()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise _failure(exc) from None
        marking = asyncio.ensure_future(hand_over())
        try:
            await _envelope(client, wire)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, PermanentFailure) as exc:
            await self.close()
            await marking  # a lost lease or an outage there outranks this failure
            raise _failure(exc) from None
        except Exception as exc:  # before DATA: the message did not leave, mark or not
            marking.cancel()
            await self.close()
            raise NotSent(f"before DATA: {type(exc).__name__}") from exc
        except BaseException:
            marking.cancel()
            raise
        try:
            await marking
        except BaseException:
            await self.close()  # the envelope begun on this connection is abandoned
            raise
        try:
            await client.data(wire.data)
        except aiosmtplib.SMTPResponseException as exc:  # answered: the server did not take it
            await self.close()
            raise _failure(exc) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise InDoubt(f"SMTP connection lost during DATA: {type(exc).__name__}") from None

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            self._client = await self._connect()
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


async def _envelope(client: aiosmtplib.SMTP, wire: Wire) -> None:
    """MAIL and RCPT for addresses the gate checked: aiosmtplib's ``mail``/``rcpt`` would
    parse each address again with the email package, a tenth of the sender's CPU for
    nothing."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    if wire.utf8 and not client.supports_extension("smtputf8"):
        raise PermanentFailure("the mail server takes no internationalised address (SMTPUTF8)")
    encoding = "utf-8" if wire.utf8 else "ascii"
    sender, recipient = wire.sender.encode(encoding), wire.recipient.encode(encoding)
    options = [b"SMTPUTF8"] if wire.utf8 else []
    response = await client.execute_command(b"MAIL", b"FROM:<" + sender + b">", *options)
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, wire.sender)
    response = await client.execute_command(b"RCPT", b"TO:<" + recipient + b">")
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, wire.recipient)


def _failure(exc: BaseException) -> TemporaryFailure | PermanentFailure:
    """A failure before the hand-over, or an answer refusing the message: never sent."""
    if isinstance(exc, PermanentFailure):
        return exc
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # Servers quote the recipient ("550 5.1.1 <jane@x.example>: unknown user"); the
        # reason is stored and published, so the address goes first, then the length.
        reason = f"SMTP {exc.code}: {redact(exc.message)[:200]}"
        if smtp_failure_is_temporary(exc.code):
            return TemporaryFailure(reason)
        return PermanentFailure(reason)
    return TemporaryFailure(f"SMTP connection: {type(exc).__name__}")
