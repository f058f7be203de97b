"""Privacy officers and admins: the pipeline, legal holds, escalations, verification."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends
from pydantic import BaseModel, BeforeValidator, StringConstraints

from services.deletion import backups, handlers, legal_holds, store
from services.deletion.answers import DeletionDetail, DeletionStatus, Pipeline, Verification
from services.deletion.context import ContextDep, describe
from services.deletion.domain.schedule import active_erasure_due, overdue
from services.deletion.domain.stages import StageConflict
from services.deletion.verifier import SnapshotUnreadable, VerificationError
from shared.auth import Claims, require_roles
from shared.observability import Problem
from shared.service.kept_text import refuse_personal_data

Operator = Annotated[Claims, Depends(require_roles("privacy_officer", "admin"))]
router = APIRouter(prefix="/operator", tags=["operators"])
PIPELINE_LIMIT = 500


def _stripped(value: object) -> object:
    # Python's strip, as the stage machine's check: pydantic's strip_whitespace keeps the
    # separators U+001C-U+001F, which str.strip takes for blanks.
    return value.strip() if isinstance(value, str) else value


class HoldBody(BaseModel):
    # Stripped before the length check: a blank reason is refused here (422), not by the
    # stage machine deeper down (which would answer 500).
    reason: Annotated[
        str, StringConstraints(min_length=3, max_length=500), BeforeValidator(_stripped)
    ]


@router.get("/pipeline", response_model=Pipeline)
async def pipeline(_operator: Operator, context: ContextDep) -> dict[str, Any]:
    """Counts per stage, requests late against GDPR/CCPA, and escalations."""
    # Escalations of requests, and of retention releases a store did not answer in time.
    # Each list is read on its own: taken from the oldest open requests, a new escalation
    # or a late request past the first few hundred would never show.
    now = context.deps.now()
    async with context.runtime.pool.acquire() as conn:
        counts = await store.stage_counts(conn)
        # As the overdue gauge reads them: no month is shorter, so none younger is late.
        old = await store.open_requests_before(conn, now - timedelta(days=28))
        escalated = await store.escalated_requests(conn, PIPELINE_LIMIT)
        releases = await store.escalated_releases(conn, PIPELINE_LIMIT)
    late = []
    for tracked in old:
        r = tracked.request
        regimes = overdue(r, now)
        if any(regimes.values()):
            late.append(
                {
                    "request_id": str(r.request_id),
                    "stage": r.stage,
                    "requested_at": r.requested_at.isoformat(),
                    "due": active_erasure_due(r).isoformat(),
                    "overdue": regimes,
                }
            )
    escalations = [
        {
            "request_id": str(t.request.request_id),
            "reason": t.request.reason,
            "since": t.request.stage_entered_at.isoformat(),
        }
        for t in escalated
    ]
    release_escalations = [
        {
            "request_id": str(r["request_id"]),
            "erase_id": str(r["erase_id"]),
            "category": r["category"],
            "reason": r["reason"],
            "since": r["escalated_at"].isoformat(),
        }
        for r in releases
    ]
    return {
        "counts": counts,
        "overdue": late,
        "escalations": escalations,
        "release_escalations": release_escalations,
    }


async def _change(context: ContextDep, change: Any) -> dict[str, Any]:
    try:
        async with context.runtime.pool.acquire() as conn, conn.transaction():
            tracked = await change(conn)
            return await describe(conn, context, tracked)
    except handlers.RequestNotFound:
        raise Problem(404, "Not found", "No such deletion request.", slug="not-found") from None
    except StageConflict as exc:
        raise Problem(409, "Conflict", str(exc), slug="stage-conflict") from None


@router.get("/requests/{request_id}", response_model=DeletionDetail)
async def request_detail(
    request_id: UUID, _operator: Operator, context: ContextDep
) -> dict[str, Any]:
    async with context.runtime.pool.acquire() as conn:
        tracked = await store.get(conn, request_id)
        if tracked is None:
            raise Problem(404, "Not found", "No such deletion request.", slug="not-found")
        shown = await describe(conn, context, tracked)
        shown["reason"] = tracked.request.reason
        shown["receipts"] = [
            {
                "store": r["store"],
                "erased": r["erased"],
                "erased_at": r["erased_at"].isoformat(),
                # An earlier pass an operator retried: proof, no longer counted.
                "superseded": r["superseded_at"] is not None,
                # A retention release's receipts are stored under the request it releases.
                "kind": "erasure" if r["erase_id"] == request_id else "release",
                "release_category": r["release_category"],
            }
            for r in await store.receipts(conn, request_id)
        ]
        shown["releases"] = [_release(r) for r in await store.pending_releases(conn, request_id)]
        shown["legal_hold"] = _hold(await legal_holds.shown(conn, tracked.request.subject_id))
        return shown


def _hold(
    found: tuple[legal_holds.Hold, list[legal_holds.Restatement]] | None,
) -> dict[str, Any] | None:
    """The subject's hold in force: its first placement, and each restatement since."""
    if found is None:
        return None
    hold, restated = found
    return {
        "reason": hold.reason,
        "placed_by": _str(hold.placed_by),
        "placed_at": hold.placed_at.isoformat(),
        "request_id": _str(hold.request_id),
        "restatements": [
            {
                "reason": r.reason,
                "stated_by": _str(r.stated_by),
                "stated_at": r.stated_at.isoformat(),
                "request_id": str(r.request_id),
            }
            for r in restated
        ],
    }


def _str(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _release(row: asyncpg.Record) -> dict[str, Any]:
    """A retention release as operators see it: due, sent, answered or escalated."""
    return {
        "category": row["category"],
        "due_at": row["due_at"].isoformat(),
        "sent_at": _iso(row["sent_at"]),
        "answered_at": _iso(row["answered_at"]),
        "escalated_at": _iso(row["escalated_at"]),
        "reason": row["reason"],
    }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


@router.post("/requests/{request_id}/hold", response_model=DeletionStatus)
async def place_hold(
    request_id: UUID, body: HoldBody, operator: Operator, context: ContextDep
) -> dict[str, Any]:
    """A legal hold pauses the request before anything is erased; the reason is recorded
    (kept for good, so it may name no one: 422 ``personal-data`` otherwise)."""
    refuse_personal_data(reason=body.reason)
    return await _change(
        context,
        lambda conn: handlers.place_hold(
            conn, context.deps, request_id, body.reason, UUID(operator.sub)
        ),
    )


@router.delete("/requests/{request_id}/hold", response_model=DeletionStatus)
async def lift_hold(request_id: UUID, operator: Operator, context: ContextDep) -> dict[str, Any]:
    """Lifting the hold resumes the request where it paused."""
    return await _change(
        context, lambda conn: handlers.lift_hold(conn, context.deps, request_id, UUID(operator.sub))
    )


@router.post("/requests/{request_id}/retry", response_model=DeletionStatus)
async def retry(request_id: UUID, operator: Operator, context: ContextDep) -> dict[str, Any]:
    """Send an escalated request back to the stores."""
    # Or, for a request erased already, its escalated retention releases.
    return await _change(
        context,
        lambda conn: handlers.retry_escalated(conn, context.deps, request_id, UUID(operator.sub)),
    )


@router.post("/requests/{request_id}/verify", response_model=Verification)
async def verify(request_id: UUID, _operator: Operator, context: ContextDep) -> dict[str, Any]:
    """Run the verifier now (read-only): where the subject or item can still be found."""
    async with context.runtime.pool.acquire() as conn:
        tracked = await store.get(conn, request_id)
    if tracked is None:
        raise Problem(404, "Not found", "No such deletion request.", slug="not-found")
    assert context.deps.verify is not None
    try:
        verdict = (await context.deps.verify([tracked]))[request_id]
    except SnapshotUnreadable as exc:  # ids and a folder: nothing from a dump
        raise Problem(
            503, "Verification unavailable", str(exc), slug="verify-unavailable"
        ) from None
    except (VerificationError, backups.BackupError) as exc:
        # Only the error's type: a pg_restore message can quote a dump's rows.
        raise Problem(
            503,
            "Verification unavailable",
            f"A store could not be searched ({type(exc).__name__}); nothing was certified.",
            slug="verify-unavailable",
        ) from None
    return {
        "clean": verdict.clean,
        "summary": verdict.summary(),
        "scanned": list(verdict.scanned),
        "vault_key_shredded": verdict.shredded,
        "findings": [
            {"place": f.store, "rows": f.rows, "kept_by_rule": f.kept_by_rule}
            for f in verdict.findings
        ],
    }
