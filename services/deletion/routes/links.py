"""An account's erasure followed through the final email's link, without signing in
(P-16): the user was deleted once the stores were told to erase, so no token of theirs
is left to ask with. The secret goes in the body, never the URL, where logs and history
would keep it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.deletion import status_links, store
from services.deletion.answers import FollowedDeletion
from services.deletion.context import ContextDep, describe
from shared.observability import Problem

router = APIRouter(tags=["users"])


class StatusLinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=10, max_length=128, description="The secret from the link.")


@router.post("/status-links", response_model=FollowedDeletion)
async def followed_link(body: StatusLinkBody, context: ContextDep) -> dict[str, Any]:
    """The request the link was mailed for, as its user saw it when signed in (stages and
    dates), and its certificate once recorded. Nothing changes: the link can be followed
    any number of times, for as long as the deletion ledger keeps the request."""
    async with context.runtime.pool.acquire() as conn:
        request_id = await status_links.request_of(conn, body.token)
        tracked = None if request_id is None else await store.get(conn, request_id)
        if tracked is None:
            raise Problem(
                400, "Link invalid", "This link is invalid: no deletion was mailed with it.",
                slug="link-invalid",
            )  # fmt: skip
        certificate = await store.certificate(conn, tracked.request.request_id)
        return {
            "status": await describe(conn, context, tracked),
            "certificate": (
                None if certificate is None
                else {"certificate": certificate["body"], "digest": certificate["digest"]}
            ),
        }  # fmt: skip
