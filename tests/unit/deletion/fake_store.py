"""A stand-in for the deletion database, for the handlers' decisions.

It replaces the functions of ``services.deletion.store`` and ``legal_holds`` the
handlers call, and records what they were asked: what was published, saved and when
each request is due again. The SQL itself runs in tests/integration/deletion.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.deletion import handlers, legal_holds, status_links, store
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import parse_policy
from services.deletion.legal_holds import Hold
from services.deletion.store import Release, Tracked
from shared.events import Event
from tests.unit.deletion.factories import T0, in_stage

RULES = """
version = "unit"
[[rule]]
category = "financial_records"
legal_basis = "financial"
period_days = 1825
action = "keep_anonymised"
"""


@dataclass
class FakeStore:
    requests: dict[UUID, Tracked] = field(default_factory=dict)
    holds: dict[UUID, Hold] = field(default_factory=dict)
    busy_subjects: set[UUID] = field(default_factory=set)  # an operator holds their lock
    due_releases: list[Release] = field(default_factory=list)
    published: list[Event] = field(default_factory=list)
    next_check: dict[UUID, datetime | None] = field(default_factory=dict)
    # erase id -> the release as last saved, and when it is looked at next
    saved_releases: dict[UUID, tuple[Release, datetime | None]] = field(default_factory=dict)
    answered_releases: list[UUID] = field(default_factory=list)
    escalated_releases: dict[UUID, str] = field(default_factory=dict)  # erase id -> reason
    shredded: list[UUID] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)  # stores whose receipt is in, any request
    snapshot_expiries: list[datetime] = field(default_factory=list)  # the live snapshots'
    status_keys: dict[UUID, str] = field(default_factory=dict)  # request -> its link's secret

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "save", "add_stage", "publish", "set_next_check", "wake_ticker", "get",
            "answered_stores", "claim_due_releases", "pending_releases", "save_release",
            "answer_release", "escalate_release", "supersede_receipts", "close_cancel_window",
            "step_failed", "step_succeeded", "snapshots_holding",
        ):  # fmt: skip
            monkeypatch.setattr(store, name, getattr(self, name))
        monkeypatch.setattr(legal_holds, "in_force", self.in_force)
        monkeypatch.setattr(legal_holds, "try_lock_subject", self.try_lock_subject)
        monkeypatch.setattr(status_links, "key_for", self.status_key)

    def deps(self, now: datetime = T0, **settings: Any) -> handlers.Deps:
        async def shred(subject: UUID) -> bool:
            self.shredded.append(subject)
            return True

        return handlers.Deps(
            DeletionSettings(**settings), parse_policy(RULES), shred, now=lambda: now
        )

    def later(self, deps: handlers.Deps, by: timedelta) -> handlers.Deps:
        moment = deps.now() + by
        return handlers.Deps(deps.settings, deps.policy, deps.shred, now=lambda: moment)

    # --- store ----------------------------------------------------------------------------

    async def save(self, _conn: object, tracked: Tracked, next_check_at: datetime | None) -> None:
        self.requests[tracked.request.request_id] = tracked
        self.next_check[tracked.request.request_id] = next_check_at

    async def add_stage(self, *_args: object) -> None:
        pass

    async def status_key(self, _conn: object, request_id: UUID) -> str:
        return self.status_keys.setdefault(request_id, f"key-{uuid.uuid4()}")

    async def publish(self, _conn: object, event: Event, _suffix: str, _subject: UUID) -> None:
        self.published.append(event)

    async def set_next_check(self, _conn: object, request_id: UUID, at: datetime | None) -> None:
        self.next_check[request_id] = at

    async def wake_ticker(self, _conn: object) -> None:
        pass

    async def get(self, _conn: object, request_id: UUID, *, lock: bool = False) -> Tracked | None:
        return self.requests.get(request_id)

    async def step_failed(
        self, _conn: object, request_id: UUID, failures: int, next_check_at: datetime
    ) -> None:
        self.requests[request_id] = replace(self.requests[request_id], step_failures=failures)
        self.next_check[request_id] = next_check_at

    async def step_succeeded(self, _conn: object, request_id: UUID) -> None:
        self.requests[request_id] = replace(self.requests[request_id], step_failures=0)

    async def snapshots_holding(self, _conn: object, _taken_by: datetime) -> list[dict[str, Any]]:
        return [{"expires_at": at} for at in sorted(self.snapshot_expiries)]

    async def answered_stores(self, _conn: object, _erase_id: UUID) -> set[str]:
        return set(self.answered)

    async def supersede_receipts(self, *_args: object) -> None:
        pass

    async def close_cancel_window(self, *_args: object) -> None:
        pass  # the handler saves the closed window with the request's next stage

    async def claim_due_releases(self, *_args: object, **_kw: object) -> list[Release]:
        return self.due_releases

    async def pending_releases(self, _conn: object, request_id: UUID) -> list[dict[str, Any]]:
        return [
            {"category": r.category, "sent_at": r.sent_at}
            for r in self.due_releases
            if r.request_id == request_id
        ]

    async def save_release(
        self, _conn: object, release: Release, next_check_at: datetime | None
    ) -> None:
        self.saved_releases[release.erase_id] = (release, next_check_at)

    @property
    def sent_releases(self) -> list[UUID]:
        return [e for e, (r, _) in self.saved_releases.items() if r.sent_at is not None]

    async def answer_release(self, _conn: object, erase_id: UUID, _now: datetime) -> bool:
        self.answered_releases.append(erase_id)
        return True

    async def escalate_release(
        self, _conn: object, erase_id: UUID, reason: str, _now: datetime
    ) -> None:
        self.escalated_releases[erase_id] = reason

    # --- legal holds ----------------------------------------------------------------------

    async def in_force(self, _conn: object, subject_id: UUID) -> Hold | None:
        return self.holds.get(subject_id)

    async def try_lock_subject(self, _conn: object, subject_id: UUID) -> bool:
        return subject_id not in self.busy_subjects


def with_a_due_release(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    """A fake store holding one erased request that kept financial records, whose
    release is due now."""
    fake = FakeStore()
    fake.install(monkeypatch)
    tracked = replace(
        Tracked(in_stage("backups_pending"), "user"), retain_categories=("financial_records",)
    )
    fake.requests[tracked.request.request_id] = tracked
    fake.due_releases.append(Release(uuid.uuid4(), tracked.request.request_id, "financial_records"))
    return fake
