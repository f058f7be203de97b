"""A user's own deletion requests: stage and expected dates, and the certificate."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import Field

from services.deletion import store
from services.deletion.context import ContextDep, describe
from shared.auth import CurrentUser
from shared.events.catalogue.deletion import DeletionStage
from shared.observability import Problem
from shared.service.answers import Answer, Timestamp

router = APIRouter(prefix="/me", tags=["users"])
MAX_PAGE = 100


class StageDate(Answer):
    stage: DeletionStage
    done_at: Timestamp | None = Field(description="When the request entered it; null if not yet.")
    expected_by: Timestamp | None = Field(
        description="When it is expected, for a stage still to come (null if unknown)."
    )


class ByRegime(Answer):
    gdpr: bool
    ccpa: bool


class LegalDeadlines(Answer):
    gdpr: Timestamp = Field(description="One month after the request (GDPR art. 12(3)).")
    ccpa: Timestamp = Field(description="45 days after the request (CCPA).")


class MyDeletion(Answer):
    """A deletion request as its user sees it: its stage and the date of each to come."""

    request_id: UUID
    scope: Literal["account", "device", "request"]
    item_id: UUID | None = Field(description="The device or request erased; null for an account.")
    stage: DeletionStage
    on_hold: bool = Field(description="Paused by a legal hold.")
    requested_at: Timestamp
    cancellable_until: Timestamp | None = Field(
        description="The end of the grace period, while it runs (cancel from accounts)."
    )
    stages: list[StageDate] = Field(description="Every stage of its path, in order.")
    legal_deadlines: LegalDeadlines
    overdue: ByRegime = Field(description="Whether the erasure is late against each law.")
    certificate_digest: str | None = Field(
        description="SHA-256 of the certificate, once the request is complete."
    )


class MyDeletions(Answer):
    requests: list[MyDeletion] = Field(description="Newest first, ``limit`` at most.")
    next_before: UUID | None = Field(
        description="Pass as ``before`` for the next page; null on the last one."
    )


class DeletionCertificate(Answer):
    certificate: dict[str, Any] = Field(
        description="What was erased where, what was kept anonymised and by which rule,"
        " the stage times and the verification: the JSON whose digest is given."
    )
    digest: str = Field(
        description="SHA-256 (hex) of the certificate as canonical JSON (sorted keys, no spaces)."
    )


def _not_found() -> Problem:
    return Problem(404, "Not found", "No such deletion request.", slug="not-found")


@router.get("/requests", response_model=MyDeletions)
async def my_requests(
    user: CurrentUser,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    before: UUID | None = None,
) -> dict[str, Any]:
    """My deletion requests (the account's, and each device or request I deleted), a
    page at a time: each is described whole (its stages and their dates)."""
    async with context.runtime.pool.acquire() as conn:
        mine = await store.of_subject(conn, UUID(user.sub), limit, before)
        if mine is None:
            raise Problem(
                422, "Invalid cursor", "'before' names none of your deletion requests.",
                slug="invalid-cursor",
            )  # fmt: skip
        return {
            "requests": [await describe(conn, context, t) for t in mine],
            "next_before": mine[-1].request.request_id if len(mine) == limit else None,
        }


@router.get("/requests/{request_id}", response_model=MyDeletion)
async def my_request(request_id: UUID, user: CurrentUser, context: ContextDep) -> dict[str, Any]:
    async with context.runtime.pool.acquire() as conn:
        tracked = await store.get(conn, request_id)
        # Someone else's request is answered exactly like a missing one (no enumeration).
        if tracked is None or str(tracked.request.subject_id) != user.sub:
            raise _not_found()
        return await describe(conn, context, tracked)


@router.get("/requests/{request_id}/certificate", response_model=DeletionCertificate)
async def my_certificate(
    request_id: UUID, user: CurrentUser, context: ContextDep
) -> dict[str, Any]:
    async with context.runtime.pool.acquire() as conn:
        tracked = await store.get(conn, request_id)
        if tracked is None or str(tracked.request.subject_id) != user.sub:
            raise _not_found()
        certificate = await store.certificate(conn, request_id)
    if certificate is None:
        raise Problem(404, "Not found", "The request is not complete yet.", slug="not-found")
    return {"certificate": certificate["body"], "digest": certificate["digest"]}
