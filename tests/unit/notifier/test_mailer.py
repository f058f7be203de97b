"""The hand-built MIME message reads exactly like the one the ``email`` package builds."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string, policy
from email.charset import QP, Charset
from email.header import Header, decode_header, make_header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, parseaddr
from types import SimpleNamespace
from typing import Any

import pytest

from services.notifier import mailer
from services.notifier.config import NotifierSettings
from services.notifier.domain import compliance
from services.notifier.domain.compliance import OutgoingEmail
from services.notifier.domain.templates import TEMPLATES
from services.notifier.mailer import (
    GatedTransport,
    HandOver,
    Refused,
    SmtpTransport,
    TemporaryFailure,
    Wire,
    build_message,
)
from tests.unit.notifier.test_compliance import POLICY, render

_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def reference(email: OutgoingEmail, message_id: str) -> bytes:
    """The message as the notifier built it before, with email.mime (the oracle)."""

    def header(value: str) -> str:
        return value if value.isascii() else Header(value, "utf-8").encode()

    message = MIMEMultipart("alternative")
    message["From"] = header(email.sender)
    message["To"] = email.to
    message["Reply-To"] = header(email.reply_to)
    message["Subject"] = header(email.subject)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    for name, value in email.headers.items():
        message[name] = header(value)
    message.attach(MIMEText(email.text, "plain", _UTF8_QP))  # type: ignore[arg-type]
    message.attach(MIMEText(email.html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return message.as_bytes()


def parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_same_mail(ours: bytes, theirs: bytes) -> None:
    a, b = parsed(ours), parsed(theirs)
    skip = {"date", "content-type"}  # the time and the random boundary differ
    # Stripped: email.mime folds a long List-Unsubscribe before its first word, which
    # reads back with a leading space; ours keeps the first word on the name's line.
    assert [(k, str(v).strip()) for k, v in a.items() if k.lower() not in skip] == [
        (k, str(v).strip()) for k, v in b.items() if k.lower() not in skip
    ]
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    ours_parts, their_parts = list(a.iter_parts()), list(b.iter_parts())
    assert len(ours_parts) == len(their_parts) == 2
    for x, y in zip(ours_parts, their_parts, strict=True):
        assert isinstance(x, EmailMessage)
        assert isinstance(y, EmailMessage)
        assert list(x.items()) == list(y.items())
        assert x.get_content() == y.get_content()
    assert not a.defects
    assert not any(p.defects for p in ours_parts)


CASES = [
    (template, category) for template, spec in TEMPLATES.items() for category in spec.categories
]


@pytest.mark.parametrize(("template", "category"), CASES)
def test_every_template_builds_the_same_mail_as_email_mime(template: str, category: str) -> None:
    email = render(template, category)
    ours = build_message(email, "<n.u.email@notifier.imt>")
    assert_same_mail(ours.data, reference(email, "<n.u.email@notifier.imt>"))
    assert (ours.sender, ours.recipient) == (
        "news@phonedoctorbiz.com" if category == "marketing" else "service@phonedoctorbiz.com",
        "ada@example.org",
    )


@pytest.mark.parametrize(
    "subject",
    [
        "Öffnungszeiten ab Montag: wir öffnen um 9 Uhr, und das jeden Tag der Woche, ganz ehrlich",
        "A plain subject long enough to be folded at a space by any header folding rule at all",
        "x" * 120,  # no space to fold at: one long line (allowed up to 998)
        "ends  with two  spaces  ",
    ],
)
def test_long_and_non_ascii_headers_read_back_unchanged(subject: str) -> None:
    email = dataclasses.replace(
        render("service_announcement", "service_announcement"),
        subject=subject,
        text="Ünïcödé body = with an equals sign\nand a line starting with --=_ too\n",
    )
    data = build_message(email, "<a.b.email@notifier.imt>").data
    assert_same_mail(data, reference(email, "<a.b.email@notifier.imt>"))
    head = data.split(b"\n\n", 1)[0].split(b"\n")
    for line in head:
        assert line.strip(), "a folded header line must not be blank"
        assert len(line) <= 998
        if len(line) > 78:  # only when no space is left to fold at after its first word
            assert b" " not in line.strip().split(b" ", 1)[-1], line


@pytest.mark.parametrize("field", ["subject", "to", "sender"])
def test_a_line_break_in_a_header_is_refused_not_sent(field: str) -> None:
    value = "x@example.org\r\nBcc: victim@example.org"
    email = render("request_reply", "transactional")
    email = dataclasses.replace(
        email,
        subject=value if field == "subject" else email.subject,
        to=value if field == "to" else email.to,
        sender=value if field == "sender" else email.sender,
    )
    with pytest.raises(Refused):
        build_message(email, "<a.b.email@notifier.imt>")


@pytest.mark.parametrize(
    "to",
    [
        "ada@example.org",
        "a.b+tag@mail.example.co.uk",
        "o'brien@example.org",
        "Ada Lovelace <ada@example.org>",
        '"ada smith"@example.org',
        "a..b@example.org",
        "ada@[127.0.0.1]",
        "ada",
        "",
    ],
)
def test_the_envelope_recipient_is_what_parseaddr_reads(to: str) -> None:
    email = dataclasses.replace(render("request_reply", "transactional"), to=to)
    assert build_message(email, "<a.b.email@notifier.imt>").recipient == parseaddr(to)[1]


class _Never:
    """A transport that must not be reached."""

    async def send(self, wire: Wire, hand_over: HandOver) -> None:
        raise AssertionError(f"sent to {wire.recipient!r}")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("to", ['"ada lovelace"@example.org', "<>"])
async def test_a_recipient_the_envelope_cannot_carry_as_is_is_refused(to: str) -> None:
    email = dataclasses.replace(render("request_reply", "transactional"), to=to)
    transport = GatedTransport(_Never(), POLICY)

    async def hand_over() -> None:
        raise AssertionError("handed over")

    with pytest.raises(Refused):
        await transport.send(email, "<a.b.email@notifier.imt>", hand_over)


@pytest.mark.parametrize("broken", ["check", "build_message"])
async def test_an_error_in_the_gate_is_a_refusal_never_one_to_retry(
    monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """Any other exception would reach the sender as an unexpected error, retried until
    the last attempt, though each retry fails alike: the email must be refused at once."""

    def failing(*_args: object) -> Any:
        raise LookupError("a bug")

    monkeypatch.setattr(compliance if broken == "check" else mailer, broken, failing)

    async def hand_over() -> None:
        raise AssertionError("handed over")

    transport = GatedTransport(_Never(), POLICY)
    email = render("request_reply", "transactional")
    with pytest.raises(Refused) as refused:
        await transport.send(email, "<a.b.email@notifier.imt>", hand_over)
    assert refused.value.reasons == ["the gate could not check it: LookupError"]
    assert isinstance(refused.value.__cause__, LookupError)


def test_an_internationalised_address_goes_as_utf8_with_smtputf8() -> None:
    to = "josé@exämple.org"
    email = dataclasses.replace(render("request_reply", "transactional"), to=to)
    wire = build_message(email, "<a.b.email@notifier.imt>")
    assert (wire.recipient, wire.utf8) == (to, True)
    # Not an RFC 2047 encoded word (an address may not be one): UTF-8 as is (RFC 6532).
    assert f"To: {to}".encode() in wire.data
    message = message_from_string(wire.data.decode("utf-8"), policy=policy.default)
    assert message["To"].addresses[0].addr_spec == to


def test_an_ascii_message_needs_no_smtputf8() -> None:
    wire = build_message(render("request_reply", "transactional"), "<a.b.email@notifier.imt>")
    assert not wire.utf8
    assert wire.data.isascii()


@pytest.mark.promise("P-14")
def test_a_refusal_quoting_the_recipient_is_kept_without_the_address() -> None:
    """The reason is stored and published on notifier.deliveries, which outlives an
    erasure: the address a server quotes in its answer must not be in it."""
    import aiosmtplib

    from services.notifier.mailer import PermanentFailure, TemporaryFailure, _failure

    refused = _failure(
        aiosmtplib.SMTPRecipientRefused(
            550, "5.1.1 <jane.doe@x.example>: Recipient address rejected", "jane.doe@x.example"
        )
    )
    assert isinstance(refused, PermanentFailure)
    assert "jane.doe" not in str(refused)
    assert str(refused).startswith("SMTP 550: 5.1.1 <")
    later = _failure(aiosmtplib.SMTPResponseException(451, "mailbox jane@x.example busy"))
    assert isinstance(later, TemporaryFailure)
    assert "jane@" not in str(later)


def _named(display: str, address: str) -> tuple[OutgoingEmail, compliance.GatePolicy]:
    """An email whose configured From, Reply-To and List-Id have this display name."""
    configured = f'"{display}" <{address}>'
    list_id = f'"{display}" <notices.phonedoctorbiz.example>'
    policy = dataclasses.replace(
        POLICY, from_transactional=configured, reply_to=configured, list_id=list_id
    )
    email = render("request_reply", "transactional")
    headers = {**email.headers, "List-Id": list_id}
    return dataclasses.replace(
        email, sender=configured, reply_to=configured, headers=headers
    ), policy


@pytest.mark.parametrize(
    ("display", "address"),
    [
        ("Télé iMT", "news@phonedoctorbiz.example"),
        ("iMT, Société", "news@phonedoctorbiz.example"),  # a comma: quoted in the setting
        ("日本のiMT", "service@phonedoctorbiz.example"),
    ],
)
def test_a_non_ascii_display_name_is_encoded_alone_and_reads_back(
    display: str, address: str
) -> None:
    """RFC 2047: the name may be an encoded word, the address never may; the gate
    compares the configured values, so it still lets them through."""
    email, policy = _named(display, address)
    assert compliance.check(email, policy) == []
    wire = build_message(email, "<a.b.email@notifier.imt>")
    assert (wire.sender, wire.utf8) == (address, False)
    assert wire.data.isascii()
    message = parsed(wire.data)
    for name in ("From", "Reply-To"):
        [read] = message[name].addresses
        assert (read.display_name, read.addr_spec) == (display, address), name
    assert str(message["List-Id"]) == f"{display} <notices.phonedoctorbiz.example>"
    assert not message.defects


def test_a_long_display_name_is_split_into_encoded_words_of_75_characters() -> None:
    """Read with decode_header, which joins adjacent encoded words as RFC 2047 6.2 says:
    Python 3.11's address parser puts a space between them, even in its own folding."""
    display = "Zoë's " * 12 + "shop"
    email, _ = _named(display, "news@phonedoctorbiz.example")
    head = build_message(email, "<a.b.email@notifier.imt>").data.decode().split("\n\n")[0]
    source = re.search(r"^From: (.*(?:\n .*)*)", head, re.M)
    assert source is not None
    value = " ".join(source.group(1).split())
    words = [w for w in value.split() if w.startswith("=?")]
    assert len(words) > 1
    assert all(len(w) <= 75 for w in words)
    decoded = str(make_header(decode_header(value)))
    assert decoded == f"{display} <news@phonedoctorbiz.example>"


def test_an_internationalised_business_address_goes_as_utf8() -> None:
    configured = "Télé iMT <actualités@phonedoctorbiz.example>"
    email = dataclasses.replace(
        render("request_reply", "transactional"), sender=configured, reply_to=configured
    )
    wire = build_message(email, "<a.b.email@notifier.imt>")
    assert (wire.sender, wire.utf8) == ("actualités@phonedoctorbiz.example", True)
    message = message_from_string(wire.data.decode("utf-8"), policy=policy.default)
    [read] = message["From"].addresses
    assert (read.display_name, read.addr_spec) == (
        "Télé iMT",
        "actualités@phonedoctorbiz.example",
    )


class _Client:
    """An aiosmtplib client, connected, that answers MAIL and RCPT and takes DATA."""

    is_connected = True
    is_ehlo_or_helo_needed = False

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    def supports_extension(self, _name: str) -> bool:
        return True

    async def execute_command(self, verb: bytes, *_args: bytes) -> Any:
        self.steps.append(verb.decode())
        return SimpleNamespace(code=250, message="ok")

    async def data(self, _data: bytes) -> None:
        self.steps.append("DATA")

    async def quit(self) -> None:
        self.steps.append("QUIT")


def _smtp(monkeypatch: pytest.MonkeyPatch, connect: Callable[[], Awaitable[Any]]) -> Any:
    transport = SmtpTransport(NotifierSettings(environment="test", notifier_smtp_security="none"))
    monkeypatch.setattr(transport, "_connect", connect)
    return transport


_WIRE = Wire("service@example.org", "ada@example.org", b"Subject: x\n\nbody\n")


async def test_a_connection_that_cannot_be_opened_leaves_no_hand_over_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connect that times out near the lease's end must not leave a marked row whose
    lease then ends: that row would be a dead letter in doubt, though it never left."""
    marked: list[str] = []

    async def timing_out() -> Any:
        await asyncio.sleep(0)  # a mark started alongside would have its turn here
        raise TimeoutError

    async def hand_over() -> None:
        marked.append("marked")

    with pytest.raises(TemporaryFailure):
        await _smtp(monkeypatch, timing_out).send(_WIRE, hand_over)
    assert marked == []


async def test_the_mark_is_taken_once_connected_and_committed_before_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []

    async def connect() -> Any:
        steps.append("connect")
        return _Client(steps)

    async def hand_over() -> None:
        steps.append("mark")

    await _smtp(monkeypatch, connect).send(_WIRE, hand_over)
    assert steps.index("connect") < steps.index("mark") < steps.index("DATA")


@pytest.mark.promise("P-28")
@pytest.mark.parametrize(
    "subject",
    [
        "About =?utf-8?q?Re=3A_Your_order_=23123?= today",
        "=?utf-8?q?x?= " + "and a long subject that needs folding " * 3,
    ],
)
def test_an_ascii_subject_holding_an_encoded_word_reads_back_as_typed(subject: str) -> None:
    """As is, a client would decode it ("About Re: Your order #123 today"); sent as an
    encoded word itself, it shows as the operator typed it."""
    email = dataclasses.replace(render("request_reply", "transactional"), subject=subject)
    wire = build_message(email, "<a.b.email@notifier.imt>")
    assert wire.data.isascii()
    message = parsed(wire.data)
    assert message["Subject"] == subject
    assert not message.defects


class _PlainRelay(_Client):
    """A relay without SMTPUTF8 (RFC 6531), which records the commands' arguments."""

    def supports_extension(self, name: str) -> bool:
        return name.lower() != "smtputf8"

    async def execute_command(self, verb: bytes, *args: bytes) -> Any:
        self.steps.append(b" ".join((verb, *args)).decode("ascii"))
        return SimpleNamespace(code=250, message="ok")


@pytest.mark.parametrize(
    ("to", "ascii_to"),
    [
        ("jane@bücher.de", "jane@xn--bcher-kva.de"),
        ("jane@straße.de", "jane@xn--strae-oqa.de"),  # IDNA 2008: not strasse.de
        ("Jane@Bücher.DE", "Jane@xn--bcher-kva.de"),
    ],
)
async def test_an_internationalised_domain_alone_goes_in_its_idna_form(
    monkeypatch: pytest.MonkeyPatch, to: str, ascii_to: str
) -> None:
    """An ASCII mailbox at an internationalised domain has an ASCII form: sent to it,
    envelope and To alike, it needs no SMTPUTF8, which a relay may not offer."""
    email = dataclasses.replace(render("request_reply", "transactional"), to=to)
    wire = GatedTransport(_Never(), POLICY)._checked(email, "<a.b.email@notifier.imt>")
    assert (wire.recipient, wire.utf8) == (ascii_to, False)
    assert wire.data.isascii()
    assert parsed(wire.data)["To"].addresses[0].addr_spec == ascii_to
    steps: list[str] = []

    async def connect() -> Any:
        return _PlainRelay(steps)

    async def hand_over() -> None:
        pass

    await _smtp(monkeypatch, connect).send(wire, hand_over)
    assert steps[:3] == [
        "MAIL FROM:<service@phonedoctorbiz.com>",
        f"RCPT TO:<{ascii_to}>",
        "DATA",
    ]
