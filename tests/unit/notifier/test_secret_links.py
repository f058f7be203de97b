"""A notice whose params hold a one-time link (an action token) goes by email only: an
inbox item is kept, exported and streamed, and its params are stripped once the email
went, so an in-site copy would show a live token, then fail to render."""

from __future__ import annotations

import uuid

import pytest

from services.notifier import handlers
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
