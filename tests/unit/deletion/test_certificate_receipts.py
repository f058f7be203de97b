"""The certificate states what the erasure itself did in each store (P-14).

A retention release's receipts are recorded under the request they release (their own
erase id), so the request's receipts include them. A release answered before the
request is certified (its last snapshot expired late, or it stayed escalated past a
period) must not stand in the certificate, nor in its digest, for the erasure.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.deletion import handlers, store
from services.deletion.domain.certificate import Verdict, digest_of
from services.deletion.store import Tracked
from tests.unit.deletion.factories import T0, in_stage
from tests.unit.deletion.fake_store import FakeStore

CLEAN = Verdict(findings=(), scanned=("postgres:accounts",), shredded=True)


def _receipt(
    erase_id: uuid.UUID,
    store_name: str,
    erased: dict[str, int],
    retained: dict[str, int],
    at: datetime,
    superseded_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "erase_id": erase_id,
        "store": store_name,
        "erased": erased,
        "retained_anonymised": retained,
        "erased_at": at,
        "superseded_at": superseded_at,
    }


async def _certify(
    monkeypatch: pytest.MonkeyPatch, tracked: Tracked, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The certificate ``complete`` saves when ``rows`` are the request's receipts (as
    store.receipts reads them: every one under its request id, oldest first)."""
    fake = FakeStore()
    fake.install(monkeypatch)
    fake.requests[tracked.request.request_id] = tracked
    saved: list[tuple[dict[str, Any], str]] = []

    async def receipts(_conn: object, request_id: uuid.UUID) -> list[dict[str, Any]]:
        assert request_id == tracked.request.request_id
        return sorted(rows, key=lambda r: r["erased_at"])

    async def history(_conn: object, _request_id: uuid.UUID) -> list[dict[str, Any]]:
        return [{"stage": "erasing", "entered_at": T0}]

    async def save_certificate(
        _conn: object, _request_id: uuid.UUID, _at: datetime, body: dict[str, Any], digest: str
    ) -> None:
        saved.append((body, digest))

    monkeypatch.setattr(store, "receipts", receipts)
    monkeypatch.setattr(store, "history", history)
    monkeypatch.setattr(store, "save_certificate", save_certificate)
    deps = fake.later(fake.deps(), timedelta(days=40))
    done = await handlers.complete(None, deps, tracked, CLEAN)  # type: ignore[arg-type]
    assert done.request.stage == "complete"
    [(body, digest)] = saved
    assert digest == digest_of(body)
    return body


def _completing() -> tuple[Tracked, uuid.UUID, datetime]:
    """A user's request about to be certified: it, its id and when it was erased."""
    tracked = Tracked(in_stage("backups_pending"), "user")
    erased_at = tracked.request.erased_at
    assert erased_at is not None
    return tracked, tracked.request.request_id, erased_at


async def test_a_release_answered_before_completion_does_not_replace_the_erasures_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracked, erasure, erased_at = _completing()
    release = uuid.uuid4()  # financial_records, due before the last snapshot expired
    released_at = erased_at + timedelta(days=20)
    rows = [
        _receipt(erasure, "accounts", {"users": 1, "devices": 2}, {"invoices": 1}, erased_at),
        _receipt(erasure, "notifier", {"contacts": 1}, {}, erased_at),
        _receipt(erasure, "analytics", {"visits": 3}, {}, erased_at),
        _receipt(release, "accounts", {"invoices": 1}, {}, released_at),
        _receipt(release, "notifier", {}, {}, released_at),
        _receipt(release, "analytics", {}, {}, released_at),
    ]

    body = await _certify(monkeypatch, tracked, rows)

    assert body["stores"] == {
        "accounts": {
            "erased": {"users": 1, "devices": 2},
            "retained_anonymised": {"invoices": 1},
            "erased_at": erased_at.isoformat(),
        },
        "notifier": {
            "erased": {"contacts": 1},
            "retained_anonymised": {},
            "erased_at": erased_at.isoformat(),
        },
        "analytics": {
            "erased": {"visits": 3},
            "retained_anonymised": {},
            "erased_at": erased_at.isoformat(),
        },
    }


async def test_the_certificate_states_the_pass_that_counted_not_a_retried_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracked, erasure, erased_at = _completing()
    first = erased_at - timedelta(days=5)
    rows = [
        _receipt(erasure, "accounts", {"users": 1}, {}, first, superseded_at=erased_at),
        _receipt(erasure, "accounts", {"users": 0}, {}, erased_at),
    ]

    body = await _certify(monkeypatch, tracked, rows)

    assert body["stores"]["accounts"]["erased"] == {"users": 0}
    assert body["stores"]["accounts"]["erased_at"] == erased_at.isoformat()
