"""Unsubscribe tokens, send-time eligibility, back-off, notice validation."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.config import NotifierSettings
from services.notifier.domain import unsubscribe
from services.notifier.domain.rules import (
    Recipient,
    backoff_seconds,
    smtp_failure_is_temporary,
    suppression_reason,
)
from services.notifier.domain.templates import notice_problems

SECRET = b"test-secret"


@given(st.binary(min_size=32, max_size=32), st.sampled_from(unsubscribe.SCOPES))
def test_tokens_round_trip(index: bytes, scope: str) -> None:
    token = unsubscribe.issue(SECRET, index, scope)
    assert unsubscribe.verify((SECRET,), token) == unsubscribe.Unsubscribe(index, scope)
    assert index.hex() not in token


def test_tampered_or_foreign_tokens_are_refused() -> None:
    token = unsubscribe.issue(SECRET, os.urandom(32), "marketing")
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (flipped, "x" * len(token), token[:-4], ""):
        with pytest.raises(unsubscribe.InvalidUnsubscribeToken):
            unsubscribe.verify((SECRET,), bad)
    with pytest.raises(unsubscribe.InvalidUnsubscribeToken):
        unsubscribe.verify((b"another-secret",), token)


def test_a_token_signed_with_a_replaced_key_still_works_while_that_key_is_kept() -> None:
    """CAN-SPAM (P-32, P-33): a link works 30 days after its email, across a rotation."""
    index = os.urandom(32)
    old = unsubscribe.issue(b"old-key", index, "marketing")
    settings = NotifierSettings(
        environment="test",
        notifier_unsubscribe_secret="new-key",
        notifier_unsubscribe_previous_secrets=" old-key , older-key",
    )
    assert settings.unsubscribe_keys() == (b"new-key", b"old-key", b"older-key")
    assert unsubscribe.verify(settings.unsubscribe_keys(), old).email_index == index
    dropped = NotifierSettings(environment="test", notifier_unsubscribe_secret="new-key")
    with pytest.raises(unsubscribe.InvalidUnsubscribeToken):
        unsubscribe.verify(dropped.unsubscribe_keys(), old)


def adult(**changes: object) -> Recipient:
    fields: dict[str, object] = {
        "age_band": "adult",
        "marketing_email": True,
        "tracking_opt_out": False,
        "active": True,
        "suppressed": False,
    }
    fields.update(changes)
    return Recipient(**fields)  # type: ignore[arg-type]


def test_marketing_rules() -> None:
    assert suppression_reason("marketing", adult()) is None
    assert "P-26" in str(suppression_reason("marketing", adult(age_band="under_13")))
    assert "P-25" in str(suppression_reason("marketing", adult(tracking_opt_out=True)))
    assert suppression_reason("marketing", adult(marketing_email=False)) is not None
    assert suppression_reason("marketing", adult(age_band="unknown")) is not None


def test_suppression_stops_every_category_but_children_get_security_notices() -> None:
    for category in ("transactional", "account_security", "policy_change", "marketing"):
        assert suppression_reason(category, adult(suppressed=True)) is not None
    assert suppression_reason("account_security", adult(age_band="under_13")) is None


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    for attempt in range(1, 12):
        step = min(30.0, 1.0 * 2 ** (attempt - 1))
        assert step / 2 <= backoff_seconds(attempt, 1.0, 30.0) <= step


def test_4xx_and_connection_errors_are_temporary_5xx_permanent() -> None:
    assert smtp_failure_is_temporary(451)
    assert smtp_failure_is_temporary(None)
    assert not smtp_failure_is_temporary(550)


def test_notice_validation() -> None:
    assert notice_problems("request_reply", "transactional", {"request_id": "x"}) == []
    assert notice_problems("nope", "transactional", {}) == ["unknown template 'nope'"]
    assert notice_problems("request_reply", "marketing", {"request_id": "x"}) == [
        "template request_reply is not sent as marketing"
    ]
    assert notice_problems("incident", "account_security", {"title": "t"}) == [
        "template incident needs params message"
    ]
    assert "parental_consent goes to the guardian" in notice_problems(
        "parental_consent", "transactional", {"consent_url": "u"}
    )
    # The change notice goes to the replaced address only, and nothing else goes there:
    # another service cannot send it to the current address, nor use the old one.
    only = "email_changed goes to the replaced address, and only it"
    assert notice_problems("email_changed", "account_security", {}, "previous") == []
    assert only in notice_problems("email_changed", "account_security", {}, "user")
    assert only in notice_problems("password_changed", "account_security", {}, "previous")
    # A link confirming a new address is asked for as the user's; it goes to that address
    # while the card holds the change it names.
    params = {"verify_url": "u", "change": "c"}
    assert notice_problems("verify_new_email", "transactional", params) == []
    assert notice_problems("verify_new_email", "transactional", {"verify_url": "u"}) == [
        "template verify_new_email needs params change"
    ]
    assert "template verify_new_email goes to the address being confirmed, only" in (
        notice_problems("verify_new_email", "transactional", params, "guardian")
    )


def test_other_services_parameter_names_are_accepted() -> None:
    from services.notifier.domain.templates import normalise_params

    params = normalise_params("verify_email", {"token": "t", "link": "https://x/v"})
    assert params["verify_url"] == "https://x/v"
    assert notice_problems("verify_email", "transactional", params) == []
    announced = normalise_params("service_announcement", {"title": "Hours", "message": "m"})
    assert announced["subject"] == "Hours"
