"""A user's own deletion requests: stage and expected dates, and the certificate."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from services.deletion import store
from services.deletion.answers import DeletionCertificate, DeletionStatus, DeletionStatuses
from services.deletion.context import ContextDep, describe
from shared.auth import CurrentUser
from shared.observability import Problem

router = APIRouter(prefix="/me", tags=["users"])
MAX_PAGE = 100


def _not_found() -> Problem:
    return Problem(404, "Not found", "No such deletion request.", slug="not-found")


@router.get("/requests", response_model=DeletionStatuses)
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


@router.get("/requests/{request_id}", response_model=DeletionStatus)
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
