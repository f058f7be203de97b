"""The stage machine of a deletion request, as pure functions.

::

    requested -> grace -> holds -> erasing -> shredded -> backups_pending -> complete
                   |        |         |  ^
                   v        v         v  | (operator retries, or the late receipts arrive)
               cancelled  paused    escalated
                          (legal hold; lifting resumes where it paused)

A whole account leaves ``holds`` only once accounts has closed its cancel window
(``DeletionConfirmed``). Accounts is where a user cancels, so it alone can say that no
cancel will come: until it has, a cancel is still taken here, and once it has, accounts
refuses any cancel itself. A cancel accounts accepted therefore never meets an erasure.
A request accounts never confirms is escalated from ``holds`` (nothing erased, its window
still open); a retry or the late confirmation takes it back to ``holds``, never further.
A single item (a device, a request) has no cancel window and skips ``shredded``: the
subject's key stays, only the item's rows go. Every function returns a new
:class:`DeletionRequest` or raises :class:`StageConflict`; none does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from shared.events.catalogue.deletion import DeletionStage

Scope = Literal["account", "device", "request"]

ACTIVE_STAGES: tuple[DeletionStage, ...] = ("requested", "grace", "holds")
CANCELLABLE: frozenset[DeletionStage] = frozenset({"requested", "grace"})
HOLDABLE: frozenset[DeletionStage] = frozenset({"requested", "grace", "holds"})
# Erased already: a hold placed through such a request pauses nothing of it, but holds
# what is kept of the subject for a period (its releases wait) and pauses the others.
HOLDS_KEPT_RECORDS: frozenset[DeletionStage] = frozenset(
    {"erasing", "shredded", "backups_pending", "complete", "escalated"}
)
FINAL: frozenset[DeletionStage] = frozenset({"complete", "cancelled"})
# A paused request's reason: the hold's own is an operator's free text (a case, a
# court), kept in legal_holds only, never in the request's history or its events.
LEGAL_HOLD = "legal_hold"
# The happy path, in order: what a user is shown as "remaining".
PATH: tuple[DeletionStage, ...] = (
    "requested",
    "grace",
    "holds",
    "erasing",
    "shredded",
    "backups_pending",
    "complete",
)


class StageConflict(Exception):
    """The transition does not apply to the request's current stage."""


@dataclass(frozen=True)
class DeletionRequest:
    request_id: UUID
    subject_id: UUID
    scope: Scope
    item_id: UUID | None
    stage: DeletionStage
    requested_at: datetime
    grace_ends_at: datetime
    stage_entered_at: datetime
    paused_from: DeletionStage | None = None
    reason: str | None = None
    erasing_started_at: datetime | None = None
    erased_at: datetime | None = None
    cancel_window_closed_at: datetime | None = None

    @property
    def whole_account(self) -> bool:
        return self.scope == "account"

    @property
    def awaits_cancel_window(self) -> bool:
        """A whole account whose cancel window accounts has not closed yet."""
        return self.whole_account and self.cancel_window_closed_at is None

    @property
    def escalated_in_holds(self) -> bool:
        """Escalated before any store was told to erase: accounts never confirmed."""
        return self.stage == "escalated" and self.erasing_started_at is None

    @property
    def waiting_in(self) -> DeletionStage:
        """The stage the request waits to leave: where a paused one resumes, and
        ``holds`` for one escalated there (nothing erased, its window still open)."""
        if self.stage == "paused" and self.paused_from is not None:
            return self.paused_from
        return "holds" if self.escalated_in_holds else self.stage


def new_request(
    request_id: UUID,
    subject_id: UUID,
    *,
    scope: Scope,
    item_id: UUID | None,
    now: datetime,
    grace: timedelta,
) -> DeletionRequest:
    """A request as accounts announced it (re-authenticated, or approved by two operators).

    Only an account has a grace period: accounts removed a deleted item at once, so
    there is nothing left to cancel, and its erasure everywhere else starts now.
    """
    if scope != "account" and item_id is None:
        raise ValueError(f"a {scope} deletion names the item")
    if scope != "account":
        grace = timedelta(0)
    return DeletionRequest(
        request_id, subject_id, scope, item_id, "requested", now, now + grace, now
    )


def _enter(
    request: DeletionRequest, stage: DeletionStage, now: datetime, reason: str | None = None
) -> DeletionRequest:
    return replace(request, stage=stage, stage_entered_at=now, reason=reason)


def _require(request: DeletionRequest, *stages: DeletionStage) -> None:
    if request.stage not in stages:
        raise StageConflict(f"request is {request.stage}, not {' or '.join(stages)}")


def start_grace(request: DeletionRequest, now: datetime) -> DeletionRequest:
    _require(request, "requested")
    return _enter(request, "grace", now)


def end_grace(request: DeletionRequest, now: datetime) -> DeletionRequest:
    _require(request, "grace")
    if now < request.grace_ends_at:
        raise StageConflict("the grace period has not ended")
    return _enter(request, "holds", now)


def cancel(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """Cancel before erasing (paused too), while accounts still takes cancels: nothing
    was erased."""
    stage = request.waiting_in
    open_holds = stage == "holds" and request.awaits_cancel_window
    if stage not in CANCELLABLE and not open_holds:
        raise StageConflict(f"a request in {request.stage} can no longer be cancelled")
    return replace(_enter(request, "cancelled", now), paused_from=None)


def close_cancel_window(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """Accounts will take no cancel of this request any more (idempotent).

    Accounts closes the window only once this service said the grace period ended (the
    ``holds`` stage), so a request still in ``requested`` or ``grace`` cannot get here.
    """
    if not request.whole_account or request.cancel_window_closed_at is not None:
        return request
    stage = request.waiting_in
    if stage in CANCELLABLE or stage == "cancelled":
        raise StageConflict(f"a request in {request.stage} has an open cancel window")
    return replace(request, cancel_window_closed_at=now)


def place_hold(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """A legal hold pauses the request before anything is erased; placed through one
    already erasing or erased, it leaves it as it is (see :data:`HOLDS_KEPT_RECORDS`),
    and through one paused already (the hold restated), too."""
    if request.stage in HOLDS_KEPT_RECORDS or request.stage == "paused":
        return request
    _require(request, *HOLDABLE)
    return replace(_enter(request, "paused", now, LEGAL_HOLD), paused_from=request.stage)


def lift_hold(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """Resume where the request paused; the ticker takes it on from there."""
    _require(request, "paused")
    assert request.paused_from is not None
    return replace(_enter(request, request.paused_from, now), paused_from=None)


def start_erasing(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """No longer cancellable: every store is told to erase."""
    _require(request, "holds")
    if request.awaits_cancel_window:
        raise StageConflict("accounts has not closed the cancel window")
    return replace(_enter(request, "erasing", now), erasing_started_at=now)


def escalate(request: DeletionRequest, reason: str, now: datetime) -> DeletionRequest:
    _require(request, "holds", "erasing", "backups_pending")
    if request.stage == "holds" and not request.awaits_cancel_window:
        raise StageConflict("a request in holds is escalated only while accounts is awaited")
    return _enter(request, "escalated", now, reason)


def retry(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """An operator sends an escalated request back to the stores, or, if it escalated
    while accounts was awaited, back to ``holds``: announced again, and erased only once
    accounts confirms (the window may have closed meanwhile, then it goes on at once)."""
    _require(request, "escalated")
    return _enter(request, "holds" if request.escalated_in_holds else "erasing", now)


def stores_answered(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """Every store erased: shred the key (whole account) or wait for backups (an item)."""
    _require(request, "erasing", "escalated")
    if request.erasing_started_at is None:
        raise StageConflict("no store was told to erase: none has answered")
    stage: DeletionStage = "shredded" if request.whole_account else "backups_pending"
    return replace(_enter(request, stage, now), erased_at=request.erased_at or now)


def await_backups(request: DeletionRequest, now: datetime) -> DeletionRequest:
    _require(request, "shredded")
    return _enter(request, "backups_pending", now)


def verified(request: DeletionRequest, now: datetime) -> DeletionRequest:
    """The verifier found nothing of the subject: the request is complete."""
    _require(request, "backups_pending", "escalated")
    if request.erased_at is None:
        raise StageConflict("a request is verified only after its erasure")
    return _enter(request, "complete", now)


WindowStep = Literal["wait", "announce", "escalate"]


def cancel_window_check(
    request: DeletionRequest, now: datetime, timeout: timedelta, first: timedelta, cap: timedelta
) -> tuple[WindowStep, datetime | None]:
    """What a whole account waiting in ``holds`` for accounts' confirmation does now, and
    when it looks again.

    The ``holds`` announcement can be lost to accounts (dead-lettered, say), and then no
    confirmation ever comes. So it is announced again ``first`` after the stage was
    entered, then each time after as long again as the request has waited (the interval
    doubles), at most ``cap`` apart; at ``timeout`` it is escalated to an operator.
    Accounts answers a repeated announcement as the first (confirmed, or cancelled).
    """
    entered = request.stage_entered_at
    deadline = entered + timeout
    if now >= deadline:
        return "escalate", None
    waited = now - entered
    if waited < first:
        return "wait", min(entered + first, deadline)
    return "announce", min(now + min(cap, waited), deadline)


def missing_stores(expected: tuple[str, ...], answered: set[str]) -> tuple[str, ...]:
    return tuple(s for s in expected if s not in answered)


ReceiptStep = Literal["answered", "escalate", "resend", "wait"]


def receipt_step(
    missing: tuple[str, ...],
    now: datetime,
    next_send_at: datetime | None,
    deadline: datetime | None,
) -> ReceiptStep:
    """What an EraseSubject awaiting its stores' receipts (a request's, or a retention
    release's) does now: done once no store is missing; escalated at its deadline;
    resent once its back-off ran out (or none was planned: sent again at once)."""
    if not missing:
        return "answered"
    if deadline is not None and now >= deadline:
        return "escalate"
    if next_send_at is None or now >= next_send_at:
        return "resend"
    return "wait"


# Doublings that take even a millisecond past any delay a timedelta holds. Past them the
# delay is at its cap anyway; and 2 ** 1024 is past any float, so a step failing for
# ever would make the back-off itself raise, in the ticker's own error handler.
MAX_DOUBLINGS = 64


def resend_delay(attempt: int, base: float, cap: float) -> timedelta:
    """Back-off before resending an unanswered EraseSubject (attempt 1 is the first send)."""
    doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)
    return timedelta(seconds=min(cap, base * 2**doublings))
