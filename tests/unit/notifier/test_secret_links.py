"""A notice whose params hold a one-time link (an action token) goes by email only: an
inbox item is kept, exported and streamed, and its params are stripped once the email
went, so an in-site copy would show a live token (items stored before that rule render
without their link)."""

from __future__ import annotations

import uuid

import pytest

from services.notifier import handlers
from services.notifier.domain.templates import (
    SECRET_LINKS,
    SECRET_PARAMS,
    SPENT_LINK,
    TEMPLATES,
    Renderer,
)
from shared.bus import Unprocessable
from shared.events.catalogue.notifier import SendNotice


def _notice(template: str, channels: tuple[str, ...], **params: str) -> SendNotice:
    return SendNotice(
        notice_id=uuid.uuid4(), template=template, category="account_security"
        if template == "deletion_requested" else "transactional",
        audience="listed", user_ids=(uuid.uuid4(),), params=params,
        channels=channels,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("template", "params"),
    [
        ("password_reset", {"token": "t" * 20, "link": "https://x/reset-password#token=t"}),
        ("deletion_requested", {"token": "t" * 20, "link": "https://x/cancel-deletion#token=t"}),
    ],
)
def test_a_one_time_link_in_site_is_refused_by_email_accepted(
    template: str, params: dict[str, str]
) -> None:
    with pytest.raises(Unprocessable, match="by email only"):
        handlers.notice_for(_notice(template, ("email", "inbox"), **params), "accounts")
    accepted = handlers.notice_for(_notice(template, ("email",), **params), "accounts")
    assert accepted is not None
    assert accepted.channels == ("email",)


def test_the_in_site_copy_of_a_deletion_notice_without_a_token_is_accepted() -> None:
    notice = _notice("deletion_requested", ("inbox",), link="https://x/#deletion=1")
    assert handlers.notice_for(notice, "accounts") is not None


_LINKS = {
    "verify_email": {"link": "https://x/verify"},
    "verify_new_email": {"link": "https://x/verify", "change": str(uuid.uuid4())},
    "parental_consent": {"link": "https://x/consent"},
    "password_reset": {"link": "https://x/reset-password"},
    "signup_attempted": {"link": "https://x/reset-password", "account_state": "active"},
    "deletion_requested": {"link": "https://x/cancel-deletion"},
    "erasure_done": {"token": "t" * 43, "request_id": str(uuid.uuid4())},
}


@pytest.mark.parametrize("template", sorted(SECRET_LINKS - {"verify_new_email"}))
def test_a_one_time_link_by_email_and_in_site_is_refused_without_a_token(template: str) -> None:
    """Whatever the link's param is called, the inbox item would show it, live, until
    the email went: a dead letter."""
    notice = _notice(template, ("email", "inbox"), **_LINKS[template])
    with pytest.raises(Unprocessable, match="by email only"):
        handlers.notice_for(notice, "accounts")


def test_a_link_to_a_new_address_never_reaches_the_inbox_it_names() -> None:
    """It goes to the address to confirm alone, which has no inbox: nothing to refuse."""
    notice = _notice("verify_new_email", ("email", "inbox"), **_LINKS["verify_new_email"])
    accepted = handlers.notice_for(notice, "accounts")
    assert accepted is not None
    assert accepted.recipient == "pending"


def test_every_one_time_link_template_is_covered() -> None:
    assert set(_LINKS) == SECRET_LINKS


def test_an_unknown_template_is_unprocessable_at_once_not_a_handler_failure() -> None:
    """Refused with its reason on first sight, not retried as a crash (a KeyError)."""
    with pytest.raises(Unprocessable, match="unknown template 'crypto_offer'"):
        handlers.notice_for(_notice("crypto_offer", ("email",)), "accounts")


@pytest.mark.parametrize("template", sorted(SECRET_LINKS - {"erasure_done"}))
def test_an_inbox_item_whose_link_was_stripped_still_renders_without_it(template: str) -> None:
    """Items stored before such notices were refused in-site lost their link with their
    email (store.record_results): the inbox shows them without it, never a 500."""
    live = {p: f"https://x/{p}#token=secret-{p}" for p in TEMPLATES[template].required}
    live.update(change=str(uuid.uuid4()), account_state="active", token="secret-token")
    renderer = Renderer()
    _, with_link = renderer.inbox(template, live)
    assert "secret-" in with_link  # the control: the live item shows its link
    stripped = {k: v for k, v in live.items() if k not in SECRET_PARAMS}
    title, body = renderer.inbox(template, stripped)
    assert title
    assert "secret-" not in body
    assert SPENT_LINK in body


def test_the_final_erasure_emails_link_is_never_shown_in_site() -> None:
    """Its link is built from the site's address, which only an email is rendered with:
    in-site (were it ever asked for, secret or spent) the reference is shown without it."""
    reference = str(uuid.uuid4())
    renderer = Renderer()
    for params in ({"request_id": reference, "token": "secret-token"}, {"request_id": reference}):
        title, body = renderer.inbox("erasure_done", params)
        assert title
        assert reference in body
        assert "secret-" not in body
        assert "deletion-status" not in body
