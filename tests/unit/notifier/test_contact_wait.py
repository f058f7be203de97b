"""An email waiting for its recipient's contact card is not leased again every retry:
the card's arrival wakes it (store.upsert_contact), so it looks again only now and then,
and is given up on when its wait ends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.sender import CONTACT_RECHECK_SECONDS, Sender, Wake
from tests.unit.notifier.test_compliance import SETTINGS

WAIT = SETTINGS.notifier_contact_wait_seconds


def _waiting_row(waited: float) -> dict[str, Any]:
    return {
        "id": 1, "notice_id": uuid.uuid4(), "user_id": uuid.uuid4(), "attempts": 0,
        "lease_until": datetime.now(UTC), "in_doubt": False, "erased": False,
        "has_contact": False, "erasure_request": None, "template": "request_reply",
        "params": {}, "waiting_since": datetime.now(UTC) - timedelta(seconds=waited),
    }  # fmt: skip


async def _decided(waited: float) -> Any:
    sender = Sender(SETTINGS, pool=None, vault=None, transport_factory=None, wake=Wake())  # type: ignore[arg-type]
    return await sender._prepare(_waiting_row(waited))


async def test_an_email_waiting_for_its_card_looks_again_soon_but_not_sooner_than_a_retry() -> None:
    """A missed wake costs at most this (a person may be waiting for a verification
    mail), and a card that never comes is not looked for faster than a retry."""
    result = await _decided(60)
    assert (result.status, result.waiting_for_contact) == ("pending", True)
    assert result.delay_seconds == max(CONTACT_RECHECK_SECONDS, SETTINGS.notifier_retry_max_seconds)
    assert result.delay_seconds <= 30


@pytest.mark.parametrize("left", [120.0, 10.0])
async def test_the_look_after_the_wait_ends_is_no_later_than_need_be(left: float) -> None:
    result = await _decided(WAIT - left)
    assert result.status == "pending"
    assert result.delay_seconds <= max(left, SETTINGS.notifier_retry_max_seconds) + 1


async def test_an_email_whose_card_never_came_is_a_dead_letter() -> None:
    result = await _decided(WAIT + 1)
    assert (result.status, result.outcome) == ("dead", "failed")
