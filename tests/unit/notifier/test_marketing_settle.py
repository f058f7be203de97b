"""A campaign waits for opt-outs in flight (P-32): only marketing, and never sooner."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.notifier import store
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


def test_a_campaign_for_later_and_other_categories_keep_their_time() -> None:
    later = NOW + timedelta(hours=2)
    assert settled(_notice("marketing", later), NOW).send_at == later
    for category in ("service_announcement", "account_security", "transactional"):
        assert settled(_notice(category), NOW).send_at is None
