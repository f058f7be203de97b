"""A campaign waits for opt-outs in flight (P-32): only marketing, and never sooner."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.notifier import store
from services.notifier.config import NotifierSettings
from services.notifier.handlers import MARKETING_SETTLE, settled

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _notice(category: str, send_at: datetime | None = None) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(),
        template="marketing_newsletter" if category == "marketing" else "service_announcement",
        category=category,
        audience="all",
        user_ids=(),
        params={},
        channels=("email",),
        recipient="user",
        pinned=False,
        source="test",
        send_at=send_at,
    )


def test_a_campaign_sent_now_waits_for_the_opt_outs_in_flight() -> None:
    assert settled(_notice("marketing"), NOW).send_at == NOW + MARKETING_SETTLE
    soon = NOW + MARKETING_SETTLE / 2
    assert settled(_notice("marketing", soon), NOW).send_at == NOW + MARKETING_SETTLE


def test_a_configured_settle_replaces_the_default() -> None:
    short = timedelta(seconds=2)
    assert settled(_notice("marketing"), NOW, short).send_at == NOW + short
    assert settled(_notice("service_announcement"), NOW, short).send_at is None


def test_the_setting_defaults_to_the_settle_and_refuses_less_than_a_second() -> None:
    default = NotifierSettings.model_fields["notifier_marketing_settle_seconds"].default
    assert timedelta(seconds=default) == MARKETING_SETTLE
    with pytest.raises(ValidationError):
        NotifierSettings(notifier_marketing_settle_seconds=0.5)


def test_a_campaign_for_later_and_other_categories_keep_their_time() -> None:
    later = NOW + timedelta(hours=2)
    assert settled(_notice("marketing", later), NOW).send_at == later
    for category in ("service_announcement", "account_security", "transactional"):
        assert settled(_notice(category), NOW).send_at is None
