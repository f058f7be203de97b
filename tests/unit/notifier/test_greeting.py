"""The name in an email's greeting: only the account's, only to a confirmed address,
never one that reads like a link."""

from __future__ import annotations

from typing import Any

import pytest

from services.notifier import handlers
from services.notifier.domain import compliance
from services.notifier.domain.greeting import GUARDIAN, NO_NAME, greeting_name
from services.notifier.sender import Sender, Wake
from tests.unit.notifier.test_compliance import PARAMS, POLICY, SETTINGS, fullwidth

ATTACK = "Claim your free iPhone at evil.com"


@pytest.mark.parametrize(
    ("template", "recipient", "active", "expected"),
    [
        ("request_reply", "user", True, "Ada"),
        ("email_changed", "previous", True, "Ada"),  # the address the account had
        ("verify_email", "user", False, NO_NAME),  # sign-up: nobody confirmed the address
        ("verify_email", "user", True, NO_NAME),  # asked again after a change of card
        ("verify_new_email", "pending", True, NO_NAME),
        ("parental_consent", "guardian", False, GUARDIAN),
        ("erasure_done", "user", False, NO_NAME),  # a card that says not active
        ("incident", "user", False, NO_NAME),
    ],
)
def test_the_name_goes_only_to_a_confirmed_address(
    template: str, recipient: str, active: bool, expected: str
) -> None:
    assert greeting_name(template, recipient, active, "Ada") == expected


@pytest.mark.parametrize(
    "name",
    [
        ATTACK,
        "Ada https://evil.example/win",
        "see hxxp://evil",
        "www.evil",
        "WWW.EVIL",
        "evil.com",
        "Ada at evil.co.uk",
        "prizes@evil.com",
        "xn--80ak6aa92e.com",
        "evil.рф",
        fullwidth("evil.com"),  # fullwidth, its full stop too
        "evil。com",  # an ideographic full stop: a dot to IDNA
        "evil\u200b.com",  # a zero-width space hides nothing
        "ask 192.168.1.20",
    ],
)
def test_a_name_that_reads_like_a_link_or_a_domain_is_not_printed(name: str) -> None:
    assert greeting_name("request_reply", "user", True, name) == NO_NAME


@pytest.mark.parametrize(
    "name",
    ["Ada", "Ada Lovelace", "J. R. R. Tolkien", "Zoë O'Brien-Smith", "李雷", "Ada 2.0"],
)
def test_ordinary_names_are_printed_as_they_are(name: str) -> None:
    assert greeting_name("request_reply", "user", True, name) == name


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_name_greets_no_one(name: str) -> None:
    assert greeting_name("request_reply", "user", True, name) == NO_NAME


class _Vault:
    """Opens what the sender asks for: the value sealed under each purpose."""

    def __init__(self, name: str) -> None:
        self.values = {
            handlers.EMAIL_PURPOSE: "ada@example.org",
            handlers.PENDING_PURPOSE: "new@example.org",
            handlers.GUARDIAN_PURPOSE: "parent@example.org",
            handlers.NAME_PURPOSE: name,
        }

    async def open(self, _subject: object, _sealed: bytes, *, purpose: str) -> str:
        return self.values[purpose]


def _row(template: str, category: str, *, active: bool, recipient: str = "user") -> Any:
    return {
        "user_id": "u",
        "recipient": recipient,
        "email": b"sealed",
        "guardian_email": b"sealed",
        "name": b"sealed",
        "address_index": bytes(32),
        "category": category,
        "template": template,
        "params": PARAMS,
        "active": active,
    }


_NO_POOL: Any = None  # composing reads no database


def _no_transport() -> Any:
    raise AssertionError("composing sends nothing")


async def _compose(name: str, row: Any) -> compliance.OutgoingEmail:
    vault: Any = _Vault(name)
    sender = Sender(
        SETTINGS, pool=_NO_POOL, vault=vault, transport_factory=_no_transport, wake=Wake()
    )
    email: compliance.OutgoingEmail = await sender._compose(row)
    return email


async def test_the_composer_prints_no_link_name_and_the_gate_lets_the_email_go() -> None:
    """A link in the name used to have every email of the account refused."""
    email = await _compose(
        "Ada https://evil.example/win", _row("incident", "account_security", active=True)
    )
    assert compliance.check(email, POLICY) == []
    assert "Hello there," in email.text
    assert "evil" not in email.text + email.html


async def test_the_composer_prints_the_name_of_a_confirmed_account() -> None:
    email = await _compose("Ada", _row("request_reply", "transactional", active=True))
    assert "Hello Ada," in email.text
    assert "Hello Ada," in email.html


@pytest.mark.parametrize(
    ("template", "active"), [("verify_email", False), ("request_reply", False)]
)
async def test_the_composer_keeps_the_name_from_an_unconfirmed_address(
    template: str, active: bool
) -> None:
    # A plain name, which a confirmed address would be greeted with (the test above):
    # only the unconfirmed address keeps it out.
    email = await _compose("Ada", _row(template, "transactional", active=active))
    assert "Hello there," in email.text
    assert "Hello there," in email.html
    assert "Ada" not in email.text
    assert "Ada" not in email.html
