"""Operators' views: fan-out progress, dead letters (and their replay), suppressions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field, field_validator

from services.notifier import store
from services.notifier.routes.deps import BIGINT_MAX, RuntimeDep
from services.notifier.sender import message_id
from shared.auth import Claims, require_roles
from shared.events.catalogue.notifier import NoticeCategory
from shared.observability import Problem
from shared.pii import contains_pii
from shared.service.answers import Answer, Timestamp

Operator = Annotated[Claims, Depends(require_roles("support", "privacy_officer", "admin"))]
router = APIRouter(prefix="/ops", tags=["operators"])


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class _NoticeState(Answer):
    notice_id: UUID
    template: str
    category: NoticeCategory
    audience: Literal["all", "listed"]
    status: Literal["scheduled", "fanning_out", "fanned_out"]
    recipients: int = Field(description="Users it was fanned out to.")
    created_at: Timestamp
    fanned_out_at: Timestamp | None
    failures: int = Field(description="Failures of its work in a row; 0 once it went.")
    held_until: Timestamp | None = Field(description="Held back until then after a failure.")


class NoticeListed(_NoticeState):
    source: str = Field(description="The service that asked for it.")
    send_at: Timestamp | None = Field(description="When it is due, if scheduled.")


class InboxProgress(Answer):
    items: int
    read: int
    acked: int


class NoticeProgress(_NoticeState):
    email_planned: bool = Field(description="Every email delivery of it is planned.")
    last_failure: str | None = Field(description="The last failure's type and a redacted message.")
    inbox: InboxProgress
    email: dict[str, int] = Field(
        description="Email deliveries by state, and outcome where there is one: sent/accepted,"
        " dead/bounced..."
    )


class DeadLetter(Answer):
    """A delivery that failed for good: what and why, not for whom."""

    id: int
    notice_id: UUID
    template: str
    category: NoticeCategory
    outcome: str | None
    reason: str | None
    attempts: int
    finished_at: Timestamp | None
    in_doubt: bool = Field(description="The mail server may have it: replay only by its id.")
    message_id: str = Field(description="Its email's Message-ID, for the mail server's log.")


class Replayed(Answer):
    replayed: int


class Suppressed(Answer):
    status: Literal["suppressed"]


class PolicyReach(Answer):
    policy_version: str
    notified: int
    emailed: int
    seen: int


@router.get("/notices", response_model=list[NoticeListed])
async def recent_notices(
    _op: Operator, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[dict[str, Any]]:
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT notice_id, template, category, audience, status, recipients, source,"
            " send_at, created_at, fanned_out_at, failures, held_until"
            " FROM notices ORDER BY created_at DESC LIMIT $1",
            limit,
        )
    return [{k: _iso(v) for k, v in dict(r).items()} for r in rows]


@router.get("/notices/{notice_id}", response_model=NoticeProgress)
async def notice_progress(notice_id: UUID, _op: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    """How far a fan-out got: in-site items, and emails by state and outcome.

    A notice whose work failed shows its failures in a row, the last one (its type and a
    short redacted message) and until when it is held back before the next try.
    """
    async with runtime.pool.acquire() as conn:
        notice = await conn.fetchrow(
            "SELECT notice_id, template, category, audience, status, recipients, email_planned,"
            " created_at, fanned_out_at, failures, last_failure, held_until"
            " FROM notices WHERE notice_id = $1",
            notice_id,
        )
        if notice is None:
            raise Problem(404, "Not found", "No such notice.", slug="not-found")
        inbox = await conn.fetchrow(
            "SELECT count(*) AS items, count(read_at) AS read, count(acknowledged_at) AS acked"
            " FROM inbox_items WHERE notice_id = $1",
            notice_id,
        )
        emails = await conn.fetch(
            "SELECT status, coalesce(outcome, '') AS outcome, count(*) AS n FROM deliveries"
            " WHERE notice_id = $1 GROUP BY 1, 2",
            notice_id,
        )
    assert inbox is not None
    return {
        **{k: _iso(v) for k, v in dict(notice).items()},
        "inbox": dict(inbox),
        "email": {
            f"{r['status']}{'/' + r['outcome'] if r['outcome'] else ''}": r["n"] for r in emails
        },
    }


@router.get("/dead-letters", response_model=list[DeadLetter])
async def dead_letters(
    _op: Operator, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[dict[str, Any]]:
    """What failed and why, by delivery and notice: not for whom (which templates a user
    was sent is a trail of their account; a replay needs only the delivery ids). Each
    with the ``message_id`` its email was (or would be) sent under, which holds no user
    id: what to look for in the mail server's log before replaying one in doubt."""
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT d.id, d.notice_id, n.template, n.category, d.outcome, d.reason,"
            " d.attempts, d.finished_at, d.in_doubt, d.user_id"
            " FROM deliveries d JOIN notices n USING (notice_id)"
            " WHERE d.status = 'dead' ORDER BY d.finished_at DESC LIMIT $1",
            limit,
        )
    return [
        {**{k: _iso(v) for k, v in dict(r).items() if k != "user_id"}, "message_id": message_id(r)}
        for r in rows
    ]


class Replay(BaseModel):
    notice_id: UUID | None = None
    delivery_ids: list[Annotated[int, Field(ge=1, le=BIGINT_MAX)]] = Field(
        default_factory=list, max_length=10_000
    )


@router.post("/dead-letters/replay", response_model=Replayed)
async def replay(body: Replay, _op: Operator, runtime: RuntimeDep) -> dict[str, int]:
    """Put dead letters back in the queue (after fixing their cause). Those in doubt
    (``in_doubt``: the mail server may have them) only when listed in ``delivery_ids``."""
    async with runtime.pool.acquire() as conn:
        count = await store.replay_dead(
            conn, notice_id=body.notice_id, delivery_ids=body.delivery_ids
        )
    return {"replayed": count}


class GlobalSuppression(BaseModel):
    user_id: UUID
    request_reference: str = Field(
        min_length=3,
        max_length=100,
        description="Reference of the person's emailed request (a ticket number, not their"
        " address): the audit trail of who stopped their email, and why.",
    )

    @field_validator("request_reference")
    @classmethod
    def _no_personal_data(cls, value: str) -> str:
        if contains_pii(value):  # the trail outlives the person's erasure
            raise ValueError("a reference must not hold an address, number or card")
        return value


class SuppressionRecorded(BaseModel):
    operator_id: str
    request_reference: str
    created_at: datetime


@router.post("/suppressions", response_model=Suppressed)
async def suppress_all(
    body: GlobalSuppression, op: Operator, runtime: RuntimeDep
) -> dict[str, str]:
    """A user emailed to be removed from ALL correspondence: stop every email to them,
    at this address and at any address their account moves to."""
    async with runtime.pool.acquire() as conn:
        if not await store.suppress_all_by_operator(
            conn, body.user_id, op.sub, body.request_reference
        ):
            raise Problem(404, "Not found", "No contact card for this user.", slug="not-found")
    return {"status": "suppressed"}


@router.get("/suppressions", response_model=list[SuppressionRecorded])
async def suppressions_recorded(
    _op: Operator, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[dict[str, Any]]:
    """Global suppressions operators recorded, newest first: who, when, under which
    reference (not whose: that is in the request the reference names)."""
    async with runtime.pool.acquire() as conn:
        # Not the copies made as a person moved address: nobody recorded those then.
        rows = await conn.fetch(
            "SELECT operator_id, request_reference, created_at FROM operator_suppressions"
            " WHERE carried_from IS NULL ORDER BY created_at DESC, id DESC LIMIT $1",
            limit,
        )
    return [dict(r) for r in rows]


@router.get("/policy-versions/{version}", response_model=PolicyReach)
async def policy_version(
    # Accounts publishes versions of at most 40 characters: a longer one names none.
    version: Annotated[str, Path(min_length=1, max_length=64)],
    _op: Operator,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """How many users were notified of a policy version, emailed, and saw it (P-23)."""
    async with runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS notified, count(emailed_at) AS emailed, count(seen_at) AS seen"
            " FROM policy_notices WHERE policy_version = $1",
            version,
        )
    assert row is not None
    return {"policy_version": version, **dict(row)}
