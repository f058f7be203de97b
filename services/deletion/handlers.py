"""One async function per event, command or due step, plus the routing table.

Every stage change is saved with its ``DeletionStageChanged`` event in one transaction
(the caller's): a worker killed at any point finds the request where the last commit
left it and takes the same step again. Side effects outside the deletion database are
idempotent: an EraseSubject resent is answered again (receipts are deduplicated), a
shred of a shredded key is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from services.deletion import legal_holds, status_links, store
from services.deletion.config import DeletionSettings
from services.deletion.domain import stages
from services.deletion.domain.certificate import Certificate, Verdict
from services.deletion.domain.retention import RetentionPolicy
from services.deletion.domain.schedule import Timing, expected_by
from services.deletion.store import Tracked
from shared.bus import Delivery, Tombstone, Unprocessable
from shared.bus.faults import crash_point
from shared.db import Connection
from shared.events import Event
from shared.events.catalogue.accounts import (
    DeletionCancelled,
    DeletionConfirmed,
    DeletionRequested,
    SignupLapsed,
)
from shared.events.catalogue.deletion import (
    UNDER_LEGAL_HOLD,
    DeletionStageChanged,
    EraseSubject,
    SubjectErased,
)
from shared.events.catalogue.notifier import SendNotice
from shared.tracing import trace_id_var, traced, working_on

log = logging.getLogger(__name__)

NOTICE_NAMESPACE = uuid5(NAMESPACE_URL, "https://imt.example/deletion/notices")
RELEASE_NAMESPACE = uuid5(NAMESPACE_URL, "https://imt.example/deletion/retention-releases")
MAX_STEPS = 8  # stage changes one tick may chain when their dates have all come
# Verifications in a row that raised (a snapshot that cannot be restored, say) before the
# request goes to an operator: back-off alone would retry it for ever, and no one would
# know that the subject's erasure is still unproved.
VERIFY_FAILURES_ESCALATED = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


Verify = Callable[[Sequence[Tracked]], Awaitable[dict[UUID, Verdict]]]


@dataclass
class Deps:
    """What the handlers need; built once by the worker (or the API, or a test)."""

    settings: DeletionSettings
    policy: RetentionPolicy
    shred: Callable[[UUID], Awaitable[bool]]
    verify: Verify | None = None
    now: Callable[[], datetime] = field(default=utcnow)

    @property
    def timing(self) -> Timing:
        s = self.settings
        return Timing(
            grace=timedelta(seconds=s.deletion_grace_seconds),
            store_timeout=timedelta(seconds=s.deletion_store_timeout_seconds),
            backup_retention=timedelta(seconds=s.deletion_backup_retention_seconds),
        )


async def _publish(conn: Connection, deps: Deps, event: Event, subject: UUID) -> None:
    await store.publish(conn, event, deps.settings.deletion_topic_suffix, subject)


async def enter(
    conn: Connection,
    deps: Deps,
    tracked: Tracked,
    next_check_at: datetime | None,
    actor: UUID | None = None,
) -> Tracked:
    """Save the request in its new stage, with its history row and its event."""
    request = tracked.request
    await store.save(conn, tracked, next_check_at)
    await store.add_stage(conn, request, actor)
    await _announce(conn, deps, request)
    return tracked


async def _announce(conn: Connection, deps: Deps, request: stages.DeletionRequest) -> None:
    """The request's current stage on ``deletion.stages`` (again, if it was announced)."""
    changed = DeletionStageChanged(
        request_id=request.request_id,
        subject_id=request.subject_id,
        stage=request.stage,
        reason=request.reason,
        entered_at=request.stage_entered_at,
    )
    await _publish(conn, deps, changed, request.subject_id)


async def _notify(
    conn: Connection, deps: Deps, request: stages.DeletionRequest, template: str
) -> None:
    """Email and inbox through the notifier: ids only, never personal data.

    Accounts confirms the request itself (with the cancel link) when the user asks; the
    notifier sends the final "erasure done" email before it erases its own copy. The
    deletion service confirms a cancellation, which only it can decide.
    """
    if not deps.settings.deletion_notices or not request.whole_account:
        return
    params = {"request_id": str(request.request_id)}
    notice = SendNotice(
        # Deterministic: a redelivered event or a second sender cannot mail twice.
        notice_id=uuid5(NOTICE_NAMESPACE, f"{request.request_id}:{template}"),
        template=template,
        category="account_security",
        audience="listed",
        user_ids=(request.subject_id,),
        params=params,
    )
    await _publish(conn, deps, notice, request.subject_id)


# --- events from accounts ------------------------------------------------------------------


async def deletion_requested(
    conn: Connection, deps: Deps, event: DeletionRequested, asked_at: datetime | None = None
) -> None:
    """``asked_at``: when accounts took the request (its envelope's time). The legal
    deadlines and the grace period run from then, not from when this worker heard of it,
    which may be much later after an outage (never later than now: clocks differ)."""
    try:
        request = stages.new_request(
            event.request_id,
            event.user_id,
            scope=event.scope,
            item_id=event.item_id,
            now=_asked(deps, asked_at),
            grace=deps.timing.grace,
        )
    except ValueError as exc:
        raise Unprocessable(str(exc)) from exc
    await _start(conn, deps, Tracked(request, event.initiated_by))


async def signup_lapsed(
    conn: Connection, deps: Deps, event: SignupLapsed, asked_at: datetime | None = None
) -> None:
    """A sign-up never completed: the whole account is erased like a requested deletion,
    with no grace period (no one can sign in to cancel it). Accounts still closes its
    cancel window, so the same handshake starts the erasure."""
    request = stages.new_request(
        event.request_id,
        event.user_id,
        scope="account",
        item_id=None,
        now=_asked(deps, asked_at),
        grace=timedelta(0),
    )
    await _start(conn, deps, Tracked(request, "retention"))


def _asked(deps: Deps, asked_at: datetime | None) -> datetime:
    now = deps.now()
    return min(asked_at, now) if asked_at is not None else now


async def _start(conn: Connection, deps: Deps, tracked: Tracked) -> None:
    now = deps.now()
    request = tracked.request
    tracked = replace(tracked, trace_id=trace_id_var.get())
    if not await store.insert_request(conn, tracked, next_check_at=now):
        return  # known already: a redelivery, or cancelled before it arrived
    await store.add_stage(conn, request)
    await store.wake_ticker(conn)
    await _announce(conn, deps, request)
    await _pause_if_held(conn, deps, tracked)


async def _pause_if_held(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked | None:
    """Pause the request if its subject is under a legal hold; None if it is not held,
    the request as it was if it cannot be told now (see below).

    The hold outlives the request it was placed through (a user may cancel and ask
    again), so every request of a held subject, an item's too, waits for its release.

    Looked at under the subject's lock, only tried (as :func:`_held_now` does): the
    caller may hold this or another request of the subject (the ticker claimed it), and
    an operator placing a hold takes the lock, then the hold's row, then the subject's
    requests; waiting here for the hold's row could deadlock with it. A subject busy
    now is looked at again a little later: the request waits where it is.
    """
    subject = tracked.request.subject_id
    if not await legal_holds.try_lock_subject(conn, subject):
        later = deps.now() + timedelta(seconds=deps.settings.deletion_retry_seconds)
        await store.set_next_check(conn, tracked.request.request_id, later)
        return tracked
    hold = await legal_holds.in_force(conn, subject)
    if hold is None:
        return None
    held = stages.place_hold(tracked.request, deps.now())
    return await enter(conn, deps, tracked.with_request(held), None, actor=hold.placed_by)


async def deletion_cancelled(conn: Connection, deps: Deps, event: DeletionCancelled) -> None:
    now = deps.now()
    tracked = await store.get(conn, event.request_id, lock=True)
    if tracked is None:
        # Cancelled before the request itself arrived: remember it, so it never starts.
        request = stages.new_request(
            event.request_id, event.user_id, scope="account", item_id=None, now=now,
            grace=timedelta(0),
        )  # fmt: skip
        tracked = Tracked(request, "user")
        await store.insert_request(conn, tracked, next_check_at=None)
    try:
        cancelled = stages.cancel(tracked.request, now)
    except stages.StageConflict as exc:
        log.warning("cancel of %s refused: %s", event.request_id, exc)
        return
    await enter(conn, deps, tracked.with_request(cancelled), None)
    await _notify(conn, deps, cancelled, "deletion_cancelled")


async def deletion_confirmed(conn: Connection, deps: Deps, event: DeletionConfirmed) -> None:
    """Accounts closed the cancel window: a request waiting in ``holds`` may be erased."""
    tracked = await store.get(conn, event.request_id, lock=True)
    if tracked is None:
        log.warning("confirmation of unknown request %s ignored", event.request_id)
        return
    now = deps.now()
    try:
        closed = stages.close_cancel_window(tracked.request, now)
    except stages.StageConflict as exc:
        log.warning("confirmation of %s ignored: %s", event.request_id, exc)
        return
    if closed is tracked.request:
        return  # closed before: a redelivery, or a second confirmation
    await store.close_cancel_window(conn, closed.request_id, now)
    if closed.escalated_in_holds:
        # Escalated for want of this very confirmation: it goes on as if it had come in time.
        await enter(conn, deps, tracked.with_request(stages.retry(closed, now)), now)
        await store.wake_ticker(conn)
    elif closed.stage == "holds":
        await store.set_next_check(conn, closed.request_id, now)
        await store.wake_ticker(conn)


# --- receipts from the stores --------------------------------------------------------------


async def subject_erased(conn: Connection, deps: Deps, event: SubjectErased) -> None:
    """A store's receipt, for a request's erasure or for a retention release (its own
    erase id): the one it answers goes on once every store it expected answered."""
    released = await store.request_of_release(conn, event.request_id)
    request_id = released or event.request_id
    tracked = await store.get(conn, request_id)
    if tracked is None:
        log.info("receipt for unknown request %s ignored", event.request_id)
        return
    recorded = await store.record_receipt(
        conn,
        event.request_id,
        request_id,
        event.store,
        event.erased,
        event.retained_anonymised,
        event.erased_at,
        event.retained_until,
    )
    if not recorded:
        return  # a duplicate: it answered before
    if released is not None:
        # Not the request's own erasure: a late release receipt must not wake it.
        await store.answer_release(conn, event.request_id, deps.now())
    elif tracked.request.stage in ("erasing", "escalated"):
        await store.set_next_check(conn, request_id, deps.now())
        await store.wake_ticker(conn)


Handler = Callable[[Connection, Deps, Event], Awaitable[None]]
EVENT_HANDLERS: dict[type[Event], Callable[[Connection, Deps, object], Awaitable[None]]] = {
    DeletionRequested: deletion_requested,  # type: ignore[dict-item]
    DeletionCancelled: deletion_cancelled,  # type: ignore[dict-item]
    DeletionConfirmed: deletion_confirmed,  # type: ignore[dict-item]
    SubjectErased: subject_erased,  # type: ignore[dict-item]
}


def route(deps: Deps) -> Callable[[Connection, Sequence[Delivery | Tombstone]], Awaitable[None]]:
    """The IdempotentConsumer handler: each event to its function; others are ignored."""

    async def handle(conn: Connection, items: Sequence[Delivery | Tombstone]) -> None:
        for item in traced(items):
            if isinstance(item, Delivery) and isinstance(item.event, DeletionRequested):
                await deletion_requested(conn, deps, item.event, item.envelope.time)
            elif isinstance(item, Delivery) and isinstance(item.event, SignupLapsed):
                await signup_lapsed(conn, deps, item.event, item.envelope.time)
            elif isinstance(item, Delivery):
                handler = EVENT_HANDLERS.get(type(item.event))
                if handler is not None:
                    await handler(conn, deps, item.event)

    return handle


# --- the ticker's steps --------------------------------------------------------------------


async def advance(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """Take every step that is due, in the caller's transaction; return where it got to."""
    for _ in range(MAX_STEPS):
        step = STEPS.get(tracked.request.stage)
        if step is None:
            await store.set_next_check(conn, tracked.request.request_id, None)
            return tracked
        before = tracked.request.stage
        tracked = await step(conn, deps, tracked)
        if tracked.request.stage == before:
            return tracked
        crash_point(f"deletion.{before}.before_commit")
    return tracked


async def _start_grace(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """A held subject's request starts paused: when it arrived, its subject may have been
    busy (the hold could not be looked at), or the hold placed just after."""
    paused = await _pause_if_held(conn, deps, tracked)
    if paused is not None:
        return paused
    request = stages.start_grace(tracked.request, deps.now())
    return await enter(conn, deps, tracked.with_request(request), request.grace_ends_at)


async def _end_grace(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    now = deps.now()
    if now < tracked.request.grace_ends_at:
        await store.set_next_check(conn, tracked.request.request_id, tracked.request.grace_ends_at)
        return tracked
    return await enter(
        conn, deps, tracked.with_request(stages.end_grace(tracked.request, now)), now
    )


async def _start_erasing(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """Retention rules decide what is kept anonymised; then every store is told to erase.

    A whole account waits here until accounts closed its cancel window. A held subject is
    never erased: a hold placed while this request was on its way here
    (or through another of the subject's requests) pauses it now.
    """
    paused = await _pause_if_held(conn, deps, tracked)
    if paused is not None:
        return paused
    if tracked.request.awaits_cancel_window:
        return await _await_cancel_window(conn, deps, tracked)
    now = deps.now()
    request = stages.start_erasing(tracked.request, now)
    retain = deps.policy.retain_categories() if request.whole_account else ()
    tracked = replace(
        tracked.with_request(request),
        expected_stores=deps.settings.store_names(),
        retain_categories=retain,
        erase_attempts=0,
        erase_deadline=now + deps.timing.store_timeout,
    )
    tracked = await _send_erase(conn, deps, tracked, now)
    return await enter(conn, deps, tracked, _next_erase_check(tracked))


async def _await_cancel_window(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """Accounts answers the ``holds`` announcement; its confirmation wakes the request.

    Until it does, the request is looked at again (:func:`stages.cancel_window_check`):
    an announcement accounts dead-lettered would otherwise leave it here for ever.
    """
    now = deps.now()
    r = tracked.request
    s = deps.settings
    step, next_check = stages.cancel_window_check(
        r,
        now,
        deps.timing.store_timeout,
        first=timedelta(seconds=s.deletion_retry_seconds),
        cap=timedelta(seconds=s.deletion_retry_max_seconds),
    )
    if step == "escalate":
        # Announced once more: a request that waited past the timeout with its first
        # announcement lost (as migration 007 found them) gets its answer, and the late
        # confirmation resumes it without an operator.
        await _announce(conn, deps, r)
        reason = "no confirmation in time from: accounts (cancel window)"
        escalated = stages.escalate(r, reason, now)
        return await enter(conn, deps, tracked.with_request(escalated), None)
    if step == "announce":
        await _announce(conn, deps, r)
    await store.set_next_check(conn, r.request_id, next_check)
    return tracked


async def _send_erase(conn: Connection, deps: Deps, tracked: Tracked, now: datetime) -> Tracked:
    r = tracked.request
    retain = tracked.retain_categories
    if retain and await legal_holds.in_force(conn, r.subject_id) is not None:
        # Placed while erasing: the stores keep even what its own period let go.
        retain = (*retain, UNDER_LEGAL_HOLD)
    shredded_by = backups_gone_by = None
    status_key = None
    # A lapsed sign-up's address was never confirmed: nothing is mailed to it.
    confirm = tracked.initiated_by != "retention"
    if r.whole_account:
        # The notifier mails them in its last email: after it, accounts has deleted the
        # user, who can no longer sign in to see the stages that remain (P-16).
        shredded_by = expected_by(r, deps.timing, now, "shredded")
        taken = await store.snapshots_holding(conn, now)  # ordered by expiry
        latest = taken[-1]["expires_at"] if taken else None
        backups_gone_by = expected_by(r, deps.timing, now, "complete", latest)
        if confirm:
            status_key = await status_links.key_for(conn, r.request_id)
    command = EraseSubject(
        request_id=r.request_id,
        subject_id=r.subject_id,
        scope=r.scope,
        item_id=r.item_id,
        retain_categories=retain,
        confirm_to_subject=confirm,
        shredded_by=shredded_by,
        backups_gone_by=backups_gone_by,
        status_key=status_key,
    )
    await _publish(conn, deps, command, r.subject_id)
    attempts = tracked.erase_attempts + 1
    return replace(
        tracked, erase_attempts=attempts, next_erase_at=now + _resend_delay(deps, attempts)
    )


def _resend_delay(deps: Deps, attempts: int) -> timedelta:
    s = deps.settings
    return stages.resend_delay(attempts, s.deletion_retry_seconds, s.deletion_retry_max_seconds)


def _next_erase_check(tracked: Tracked) -> datetime | None:
    return _earliest(tracked.next_erase_at, tracked.erase_deadline)


def _earliest(*dates: datetime | None) -> datetime | None:
    known = [d for d in dates if d is not None]
    return min(known) if known else None


async def _await_stores(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """Erasing: done when every store answered; resend with back-off; escalate at timeout."""
    now = deps.now()
    r = tracked.request
    answered = await store.answered_stores(conn, r.request_id)
    missing = stages.missing_stores(tracked.expected_stores, answered)
    step = stages.receipt_step(missing, now, tracked.next_erase_at, tracked.erase_deadline)
    if step == "answered":
        return await _stores_answered(conn, deps, tracked, now)
    if r.stage == "escalated":
        await store.set_next_check(conn, r.request_id, None)  # an operator or a receipt wakes it
        return tracked
    if step == "escalate":
        escalated = stages.escalate(r, _unanswered(missing), now)
        return await enter(conn, deps, tracked.with_request(escalated), None)
    if step == "resend":
        tracked = await _send_erase(conn, deps, tracked, now)
    await store.save(conn, tracked, _next_erase_check(tracked))
    return tracked


def _unanswered(missing: Sequence[str]) -> str:
    return f"no answer in time from: {', '.join(missing)}"


async def _await_escalated(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """Escalated: late receipts may still complete the erasure. One escalated in holds
    told no store to erase, so no receipt is awaited (an empty list of stores would
    read as all answered): an operator's retry or accounts' confirmation moves it."""
    if tracked.request.escalated_in_holds:
        await store.set_next_check(conn, tracked.request.request_id, None)
        return tracked
    return await _await_stores(conn, deps, tracked)


async def _stores_answered(
    conn: Connection, deps: Deps, tracked: Tracked, now: datetime
) -> Tracked:
    request = stages.stores_answered(tracked.request, now)
    if request.whole_account:
        await deps.shred(request.subject_id)  # idempotent; repeated if the commit is lost
        crash_point("deletion.after_shred")
        await _plan_releases(conn, deps, request)
    return await enter(conn, deps, tracked.with_request(request), now)


async def _plan_releases(conn: Connection, deps: Deps, request: stages.DeletionRequest) -> None:
    assert request.erased_at is not None
    due = {
        category: (uuid5(RELEASE_NAMESPACE, f"{request.request_id}:{category}"), at)
        for category, at in deps.policy.releases(
            request.erased_at, deps.policy.dated(await store.kept_dates(conn, request.request_id))
        ).items()
    }
    await store.plan_releases(conn, request.request_id, due)


async def _await_backups_stage(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    now = deps.now()
    return await enter(
        conn, deps, tracked.with_request(stages.await_backups(tracked.request, now)), now
    )


async def _backups_expired(conn: Connection, deps: Deps, tracked: Tracked) -> Tracked:
    """Backups pending: wait until every snapshot taken before the erasure has expired.

    When none is left the request is due for verification, which the ticker runs
    outside this transaction (:func:`verify_and_complete`).
    """
    now = deps.now()
    r = tracked.request
    assert r.erased_at is not None
    holding = await store.snapshots_holding(conn, r.erased_at)
    if holding:
        latest = max(s["expires_at"] for s in holding)
        poll = now + timedelta(seconds=deps.settings.deletion_backup_poll_seconds)
        await store.set_next_check(conn, r.request_id, max(now, min(latest, poll)))
        return tracked
    # A lease: if this worker dies while verifying, another one verifies later.
    lease = now + timedelta(seconds=deps.settings.deletion_verify_lease_seconds)
    await store.set_next_check(conn, r.request_id, lease)
    return replace(tracked, verify_due=True)


STEPS: dict[str, Callable[[Connection, Deps, Tracked], Awaitable[Tracked]]] = {
    "requested": _start_grace,
    "grace": _end_grace,
    "holds": _start_erasing,
    "erasing": _await_stores,
    "escalated": _await_escalated,
    "shredded": _await_backups_stage,
    "backups_pending": _backups_expired,
}


async def complete(conn: Connection, deps: Deps, tracked: Tracked, verdict: Verdict) -> Tracked:
    """Record the verifier's verdict: a certificate and ``complete``, or an escalation."""
    now = deps.now()
    r = tracked.request
    if not verdict.clean:
        escalated = stages.escalate(r, verdict.summary(), now)
        return await enter(conn, deps, tracked.with_request(escalated), None)
    done = stages.verified(r, now)
    history = {h["stage"]: h["entered_at"] for h in await store.history(conn, r.request_id)}
    history["complete"] = now
    stores: dict[str, dict[str, object]] = {}
    for receipt in await store.receipts(conn, r.request_id):
        if receipt["erase_id"] != r.request_id:
            # A retention release's (recorded under the request it releases): answered
            # before the request is certified, it would pass for what the erasure did.
            continue
        if receipt["superseded_at"] is not None:
            continue  # an earlier pass, retried: the certificate states the one that counted
        stores.setdefault(receipt["store"], {"erased": {}, "retained_anonymised": {}})
        stores[receipt["store"]]["erased"] = receipt["erased"]
        stores[receipt["store"]]["retained_anonymised"] = receipt["retained_anonymised"]
        stores[receipt["store"]]["erased_at"] = receipt["erased_at"].isoformat()
    certificate = Certificate(
        r.request_id, r.scope, history, stores, deps.policy.version, verdict, now
    )
    await store.save_certificate(conn, r.request_id, now, certificate.body, certificate.digest)
    return await enter(conn, deps, tracked.with_request(done), None)


# --- retention releases --------------------------------------------------------------------


async def release_retained(conn: Connection, deps: Deps) -> int:
    """Kept categories whose period ended: a second EraseSubject erases them too. Like an
    erasure, it is resent with back-off until every store answered it (a store that
    dead-lettered it would otherwise keep the records for ever) and escalated to an
    operator at the store timeout. Returns how many were sent (first or again).

    Not while the subject is under a legal hold (P-13): keeping the records is what the
    hold is for. A release is neither sent nor resent while it is in force; it goes once
    the hold is released (:func:`lift_hold` gives one sent before the hold a new timeout).
    """
    now = deps.now()
    sent = 0
    for release in await store.claim_due_releases(conn, now, limit=100):
        tracked = await store.get(conn, release.request_id)
        if tracked is None or await _held_now(conn, tracked.request.subject_id):
            continue
        if await _await_release(conn, deps, tracked, release, now):
            sent += 1
    return sent


async def _await_release(
    conn: Connection, deps: Deps, tracked: Tracked, release: store.Release, now: datetime
) -> bool:
    """The release's next step: sent first, then awaited as :func:`_await_stores` awaits an
    erasure; True if it was sent."""
    if release.sent_at is None:
        # The stores expected now: a release years after the erasure goes to today's.
        first = replace(release, expected_stores=deps.settings.store_names())
        await _send_release(conn, deps, tracked, first, now)
        return True
    answered = await store.answered_stores(conn, release.erase_id)
    missing = stages.missing_stores(release.expected_stores, answered)
    step = stages.receipt_step(missing, now, release.next_send_at, release.answer_deadline)
    if step == "answered":
        await store.answer_release(conn, release.erase_id, now)
    elif step == "escalate":
        await _escalate_release(conn, release, _unanswered(missing), now)
    elif step == "resend":
        await _send_release(conn, deps, tracked, release, now)
    else:
        await store.save_release(conn, release, _next_release_check(release))
    return step == "resend"


async def _send_release(
    conn: Connection, deps: Deps, tracked: Tracked, release: store.Release, now: datetime
) -> None:
    """Send (or resend, under the same erase id) the release's EraseSubject."""
    r = tracked.request
    # No stage dates: the notifier mails nothing for a release, the address is gone.
    command = EraseSubject(
        request_id=release.erase_id,
        subject_id=r.subject_id,
        scope=r.scope,
        item_id=r.item_id,
        retain_categories=await _still_kept(conn, tracked, release),
    )
    with working_on(tracked.trace_id):  # the request's, years on
        await _publish(conn, deps, command, r.subject_id)
    attempts = release.send_attempts + 1
    release = replace(
        release,
        sent_at=release.sent_at or now,
        send_attempts=attempts,
        next_send_at=now + _resend_delay(deps, attempts),
        # Kept across resends; none yet on a release's first send, or restarted.
        answer_deadline=release.answer_deadline or now + deps.timing.store_timeout,
    )
    await store.save_release(conn, release, _next_release_check(release))


async def _still_kept(
    conn: Connection, tracked: Tracked, release: store.Release
) -> tuple[str, ...]:
    """The categories the stores keep on: the request's, less those released already."""
    pending = {p["category"] for p in await store.pending_releases(conn, release.request_id)
               if p["sent_at"] is None and p["category"] != release.category}  # fmt: skip
    return tuple(c for c in tracked.retain_categories if c in pending)


def _next_release_check(release: store.Release) -> datetime | None:
    return _earliest(release.next_send_at, release.answer_deadline)


async def _escalate_release(
    conn: Connection, release: store.Release, reason: str, now: datetime
) -> None:
    await store.escalate_release(conn, release.erase_id, reason, now)
    # Ids and store names only. The pipeline lists it, and a gauge counts it.
    log.warning(
        "retention release %s of request %s (%s) escalated: %s",
        release.erase_id,
        release.request_id,
        release.category,
        reason,
    )


async def _held_now(conn: Connection, subject_id: UUID) -> bool:
    """Whether a hold keeps the subject's records, or may be placed on it this moment.

    The claim skipped subjects held when it ran; a hold placed since commits under the
    subject's lock, so the check is made under it. Only tried: an operator holding it
    locks the subject's requests too, which this tick may have claimed (a wait could
    deadlock); a subject busy now is released at a later tick.
    """
    if not await legal_holds.try_lock_subject(conn, subject_id):
        return True
    return await legal_holds.in_force(conn, subject_id) is not None


# --- a step that fails ------------------------------------------------------------------


async def defer_failed_step(conn: Connection, deps: Deps, tracked: Tracked) -> datetime:
    """Put a request whose step failed back by a delay doubling with each failure in a
    row; return when it is due again. Its step's effects were undone by the caller."""
    failures = tracked.step_failures + 1
    s = deps.settings
    delay = stages.resend_delay(failures, s.deletion_retry_seconds, s.deletion_retry_max_seconds)
    due = deps.now() + delay
    await store.step_failed(conn, tracked.request.request_id, failures, due)
    return due


async def verification_failed(
    conn: Connection, deps: Deps, tracked: Tracked, error: str
) -> datetime | None:
    """A verification that raised, counted as a failed step (``step_failures``): put back
    with the same back-off, or escalated at the :data:`VERIFY_FAILURES_ESCALATED`-th in
    a row (None then). ``error``: the error's type; never its message."""
    failures = tracked.step_failures + 1
    if failures < VERIFY_FAILURES_ESCALATED:
        return await defer_failed_step(conn, deps, tracked)
    reason = f"verification failed {failures} times in a row ({error})"
    escalated = stages.escalate(tracked.request, reason, deps.now())
    await enter(conn, deps, tracked.with_request(escalated), None)
    await store.step_succeeded(conn, tracked.request.request_id)  # counted afresh after a retry
    return None


# --- operators -----------------------------------------------------------------------------


class RequestNotFound(LookupError):
    pass


async def _locked(conn: Connection, request_id: UUID) -> Tracked:
    tracked = await store.get(conn, request_id, lock=True)
    if tracked is None:
        raise RequestNotFound(str(request_id))
    return tracked


async def _lock_subject_of(conn: Connection, request_id: UUID) -> Tracked:
    """The request, locked, once its subject's hold actions are serialised."""
    found = await store.get(conn, request_id)
    if found is None:
        raise RequestNotFound(str(request_id))
    await legal_holds.lock_subject(conn, found.request.subject_id)
    return await _locked(conn, request_id)


async def place_hold(
    conn: Connection, deps: Deps, request_id: UUID, reason: str, operator: UUID
) -> Tracked:
    """Hold the request's subject: this request and the subject's others not yet erasing
    pause, and any it makes later start paused, until an operator releases the hold.

    Placed through a request already erasing or erased (a claim that comes up after the
    deletion), it holds what is kept of the subject for a period: its releases wait
    (:func:`release_retained`). The request itself goes on as it was."""
    if not reason.strip():
        raise ValueError("a legal hold states its reason")
    tracked = await _lock_subject_of(conn, request_id)
    now = deps.now()
    held = stages.place_hold(tracked.request, now)
    subject = held.subject_id
    await legal_holds.place(conn, subject, reason, operator, now, request_id)
    for other in await store.of_subject_in(conn, subject, sorted(stages.HOLDABLE)):
        if other.request.request_id != request_id:
            paused = stages.place_hold(other.request, now)
            await enter(conn, deps, other.with_request(paused), None, actor=operator)
    if held is tracked.request:  # erasing or erased, or paused: nothing of it to pause
        return tracked
    return await enter(conn, deps, tracked.with_request(held), None, actor=operator)


async def lift_hold(conn: Connection, deps: Deps, request_id: UUID, operator: UUID) -> Tracked:
    """Release the subject's hold and resume every request of it that waits paused.

    Released through any of the subject's requests, a cancelled one too (the hold may
    have been placed through it before the user cancelled).
    """
    tracked = await _lock_subject_of(conn, request_id)
    now = deps.now()
    subject = tracked.request.subject_id
    released = await legal_holds.release(conn, subject, operator, now)
    paused = await store.of_subject_in(conn, subject, ("paused",))
    if not released and not paused:
        raise stages.StageConflict(f"request is {tracked.request.stage}; its subject is not held")
    await store.restart_held_releases(conn, subject, now)
    for waiting in paused:
        resumed = stages.lift_hold(waiting.request, now)
        saved = await enter(conn, deps, waiting.with_request(resumed), now, actor=operator)
        if resumed.request_id == request_id:
            tracked = saved
    return tracked


async def retry_escalated(
    conn: Connection, deps: Deps, request_id: UUID, operator: UUID
) -> Tracked:
    """Send an escalated request back to the stores with a fresh timeout.

    The stores know the erasure by its id, so it is resent under the same one; the
    earlier pass's receipts are superseded, or they would answer for this pass before
    any store erased again. One escalated while accounts was awaited goes back to
    ``holds`` instead: no store may erase before accounts closes the cancel window.
    A request erased already may have escalated retention releases: those are resent.
    """
    tracked = await _locked(conn, request_id)
    now = deps.now()
    if tracked.request.stage != "escalated":
        return await _retry_releases(conn, tracked, now)
    request = replace(stages.retry(tracked.request, now), erased_at=None)
    if await legal_holds.in_force(conn, request.subject_id) is not None:
        raise stages.StageConflict("the subject is under a legal hold: release it first")
    if request.stage == "holds":
        # Escalated while accounts was awaited: nothing was sent to the stores. Entering
        # holds again announces it, and the ticker erases once accounts confirms.
        await store.wake_ticker(conn)
        return await enter(conn, deps, tracked.with_request(request), now, actor=operator)
    await store.supersede_receipts(conn, request_id, now)
    tracked = replace(
        tracked.with_request(request),
        erase_attempts=0,
        erase_deadline=now + deps.timing.store_timeout,
    )
    tracked = await _send_erase(conn, deps, tracked, now)
    return await enter(conn, deps, tracked, now, actor=operator)


async def _retry_releases(conn: Connection, tracked: Tracked, now: datetime) -> Tracked:
    """Resend the request's escalated releases with a fresh timeout (the ticker sends
    them; not while the subject is held). Their receipts so far still count: each store
    that answered erased what the release asked of it."""
    if not await store.retry_escalated_releases(conn, tracked.request.request_id, now):
        raise stages.StageConflict(
            f"request is {tracked.request.stage}, not escalated, and no release of it is"
        )
    await store.wake_ticker(conn)
    return tracked
