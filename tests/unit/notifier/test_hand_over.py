"""The hand-over mark: refused for a lost lease or an unsubscribe since the lease, and
then nothing is sent and nothing is recorded (the next lease decides again)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.notifier import store
from services.notifier.domain import compliance
from services.notifier.mailer import GatedTransport, HandOver, Wire
from services.notifier.sender import HandOvers, Job, Sender, Wake, lease_of
from tests.unit.notifier.test_compliance import POLICY, SETTINGS, render

LEASE_UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


def _row(delivery_id: int, category: str = "marketing") -> dict[str, Any]:
    return {
        "id": delivery_id,
        "lease_until": LEASE_UNTIL,
        "address_index": bytes([delivery_id]) * 32,
        "category": category,
        "notice_id": "n",
        "user_id": "u",
        "attempts": 0,
        "template": "marketing_newsletter",
        "params": {},
        "erasure_request": None,
    }


def _pool() -> Any:
    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[object]:
        yield object()

    return SimpleNamespace(acquire=acquire)


def _marking_only(monkeypatch: pytest.MonkeyPatch, ids: set[int]) -> list[store.Lease]:
    """store.hand_over marks ``ids`` only (the others: lease lost or unsubscribed)."""
    asked: list[store.Lease] = []

    async def hand_over(
        _conn: object, leases: Sequence[store.Lease], _margin: float = 0.0
    ) -> set[tuple[int, datetime]]:
        asked.extend(leases)
        return {
            (lease.delivery_id, lease.lease_until) for lease in leases if lease.delivery_id in ids
        }

    monkeypatch.setattr(store, "hand_over", hand_over)
    return asked


def test_the_hand_over_checks_the_address_and_category_the_email_goes_to() -> None:
    row = _row(7, "service_announcement")
    assert lease_of(row) == store.Lease(7, LEASE_UNTIL, bytes([7]) * 32, "service_announcement")


async def test_an_unmarked_delivery_is_a_lost_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _marking_only(monkeypatch, {1})
    marks = HandOvers(_pool())
    results = await asyncio.gather(
        marks.mark(lease_of(_row(1))), marks.mark(lease_of(_row(2))), return_exceptions=True
    )
    assert results[0] is None
    assert isinstance(results[1], store.LeaseLost)
    assert "unsubscribed" in str(results[1])
    assert asked == [lease_of(_row(1)), lease_of(_row(2))]  # one round, both leases


class _Conn:
    """Answers the hand-over statement as PostgreSQL does for one row under two leases:
    only the lease the row holds now matches, and the row is returned once."""

    def __init__(self, held: datetime) -> None:
        self.held = held

    async def fetch(self, _sql: str, ids: list[int], leases: list[datetime], *_: Any) -> list[Any]:
        rows = {i: {"id": i, "lease_until": lease} for i, lease in zip(ids, leases, strict=True)}
        return [row for row in rows.values() if row["lease_until"] == self.held]


async def test_a_row_leased_again_is_handed_over_under_its_new_lease_only() -> None:
    """Queued under lease J until J ran out, then leased again (J') by this process: both
    jobs reach the same round, and only J' may send its DATA."""
    first, again = LEASE_UNTIL, LEASE_UNTIL + timedelta(seconds=120)
    conn = _Conn(held=again)

    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[object]:
        yield conn

    pool: Any = SimpleNamespace(acquire=acquire)
    marks = HandOvers(pool)
    old, new = (store.Lease(5, until, b"a" * 32, "marketing") for until in (first, again))
    results = await asyncio.gather(marks.mark(old), marks.mark(new), return_exceptions=True)
    assert isinstance(results[0], store.LeaseLost)
    assert results[1] is None


class _Smtp:
    """Marks the hand-over, then takes the message (DATA), as SmtpTransport does."""

    def __init__(self) -> None:
        self.taken: list[Wire] = []

    async def send(self, wire: Wire, hand_over: HandOver) -> None:
        await hand_over()
        self.taken.append(wire)

    async def close(self) -> None:
        pass


async def _send_once(
    monkeypatch: pytest.MonkeyPatch, *, marked: bool
) -> tuple[store.Result | None, Sender, _Smtp]:
    """One leased email sent through the gate by a sender whose hand-over is marked or
    refused."""
    _marking_only(monkeypatch, {3} if marked else set())
    pool, smtp = _pool(), _Smtp()
    vault: Any = None  # the email is composed already
    sender = Sender(SETTINGS, pool, vault, transport_factory=lambda: smtp, wake=Wake())
    marks, row = HandOvers(pool), _row(3)
    job = Job(row, render("marketing_newsletter", "marketing"))

    async def hand_over() -> None:
        await marks.mark(lease_of(row))

    return await sender._send(GatedTransport(smtp, POLICY), job, hand_over), sender, smtp


@pytest.mark.promise("P-32")
async def test_a_refused_hand_over_sends_nothing_and_records_no_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unsubscribed while the email waited: no DATA, and no outcome recorded under this
    lease (the row's next lease records it as suppressed), exactly as for a lost lease."""
    outcome, sender, smtp = await _send_once(monkeypatch, marked=False)
    assert outcome is None
    assert smtp.taken == []
    assert sender.sent == 0


async def test_a_marked_hand_over_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, sender, smtp = await _send_once(monkeypatch, marked=True)
    assert outcome is not None
    assert (outcome.status, outcome.outcome) == ("done", "sent")
    assert len(smtp.taken) == 1
    assert sender.sent == 1


@pytest.mark.promise("P-31")
async def test_an_email_the_gate_cannot_read_is_a_dead_letter_at_once_never_handed_over() -> None:
    """A link urlsplit cannot read, in an operator's incident text: refused by the gate,
    so one dead letter with the gate's reason, not an error retried for every recipient
    until the last attempt (each one a send slot, a traceback and a reconnect)."""
    smtp = _Smtp()
    vault: Any = None  # the email is composed already
    sender = Sender(SETTINGS, _pool(), vault, transport_factory=lambda: smtp, wake=Wake())
    email = render("incident", "account_security", message="Never open https://[your-bank]/login")
    row = {**_row(3, "account_security"), "template": "incident"}

    async def hand_over() -> None:
        raise AssertionError("handed over")

    outcome = await sender._send(GatedTransport(smtp, POLICY), Job(row, email), hand_over)
    assert outcome is not None
    assert (outcome.status, outcome.outcome, outcome.smtp_attempted) == ("dead", "refused", False)
    assert outcome.reason == f"compliance gate: {compliance.UNREADABLE_LINK}"
    assert smtp.taken == []
