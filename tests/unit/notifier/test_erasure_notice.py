"""The final email of an account's erasure: the dates, what is kept, the reference, and
the link that shows the stages without a sign-in (P-16).

The user can no longer sign in once it is sent, so what it says is all they keep.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from html import unescape

import pytest

from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy
from services.notifier.domain import compliance
from services.notifier.domain.compliance import OutgoingEmail
from services.notifier.domain.erasure_notice import KEPT_RECORDS, erasure_done_params, utc_day
from services.notifier.domain.templates import Footer, Renderer
from shared.events.catalogue.deletion import UNDER_LEGAL_HOLD, EraseSubject
from tests.unit.notifier.test_compliance import POLICY, SETTINGS, URL, outgoing

FOOTER = Footer(
    SETTINGS.notifier_public_base_url,
    SETTINGS.notifier_postal_address,
    SETTINGS.notifier_ad_label,
    SETTINGS.notifier_reply_to,
)
SHIPPED = load_policy(DeletionSettings(environment="test").deletion_retention_file)
REQUEST = uuid.UUID("5997f71b-204d-48be-be83-eeaf22d37fb9")
SHREDDED = datetime(2027, 3, 4, 10, 30, tzinfo=UTC)
GONE = datetime(2027, 4, 8, 10, 30, tzinfo=UTC)


def _command(**fields: object) -> EraseSubject:
    return EraseSubject(request_id=REQUEST, subject_id=uuid.uuid4(), **fields)


def _email(command: EraseSubject) -> OutgoingEmail:
    params = erasure_done_params(command)
    rendered = Renderer().email(
        "erasure_done",
        category="transactional",
        params=params,
        name="Ada",
        unsubscribe_url=URL,
        footer=FOOTER,
    )
    return outgoing("transactional", rendered)


def _read(html: str) -> str:
    """The HTML part as it reads (tags out, inline ones without a space for them)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())


@pytest.mark.promise("P-16")
def test_the_final_email_dates_the_backups_and_gives_the_reference() -> None:
    command = _command(
        shredded_by=SHREDDED,
        backups_gone_by=GONE,
        retain_categories=SHIPPED.retain_categories(),
    )
    email = _email(command)
    for body in (email.text, _read(email.html)):
        assert "The last backup holding your data will have expired by 8 April 2027 (UTC)" in body
        assert "we expect it by 4 March 2027, UTC" in body
        assert "encrypted with a key of your own" in body
        assert f"Your reference for this deletion: {REQUEST}" in body
        assert f"write to {SETTINGS.notifier_reply_to} quoting this reference" in body
        # Kept for a legal period, said without a date the deletion service cannot know.
        assert "financial records of your repairs (invoices)" in body
        assert "we cannot date its end yet" in body
    assert email.subject == "Your data has been deleted"
    assert compliance.check(email, POLICY) == []
    # Ids, dates and fixed wording: nothing of the recipient but the greeting's name.
    assert "ada@example.org" not in email.text + email.html


@pytest.mark.promise("P-16")
def test_the_final_email_links_to_the_stages_without_a_sign_in() -> None:
    """The command's secret becomes a link to the status page, in both parts; the
    write-to-us fallback is for a command without one."""
    key = "k3y-" + "A" * 40
    email = _email(_command(shredded_by=SHREDDED, backups_gone_by=GONE, status_key=key))
    link = f"{SETTINGS.notifier_public_base_url}/deletion-status#token={key}"
    assert link in email.text
    assert f'href="{link}"' in email.html
    for body in (email.text, _read(email.html)):
        assert f"Your reference for this deletion: {REQUEST}" in body
        assert "It needs no sign-in and shows nothing else" in body
        assert "quoting this reference" not in body
    assert compliance.check(email, POLICY) == []


def test_a_command_without_dates_says_none_and_no_kept_records_say_nothing() -> None:
    """A command from a deletion service before the fields (or one that keeps nothing):
    no backups paragraph with an empty date, and no kept-records paragraph."""
    email = _email(_command())
    assert "backup" not in email.text
    assert "kept after the deletion" not in email.text
    assert f"Your reference for this deletion: {REQUEST}" in email.text
    assert compliance.check(email, POLICY) == []


def test_a_legal_hold_is_no_kept_category() -> None:
    params = erasure_done_params(
        _command(retain_categories=("financial_records", UNDER_LEGAL_HOLD, "new_thing"))
    )
    assert params["kept"] == (
        "financial records of your repairs (invoices), no longer linked to your account; new thing"
    )


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2027, 4, 8, 23, 59, tzinfo=UTC), "8 April 2027"),
        # 20:00 in New York on 7 April is 8 April in UTC: the day is UTC's, as the email says.
        (datetime(2027, 4, 7, 20, 0, tzinfo=timezone(timedelta(hours=-4))), "8 April 2027"),
        (datetime(2028, 12, 1, tzinfo=UTC), "1 December 2028"),
    ],
)
def test_dates_are_written_out_as_utc_days(moment: datetime, day: str) -> None:
    assert utc_day(moment) == day


def test_every_category_the_shipped_rules_keep_has_its_own_words() -> None:
    """A category added to retention.toml is mailed by its bare name until it gets words."""
    assert set(SHIPPED.retain_categories()) <= set(KEPT_RECORDS)
