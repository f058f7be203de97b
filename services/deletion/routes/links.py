"""An account's erasure followed through the final email's link, without signing in
(P-16): the user was deleted once the stores were told to erase, so no token of theirs
is left to ask with. The secret goes in the body, never the URL, where logs and history
would keep it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.deletion import status_links, store
from services.deletion.answers import FollowedDeletion
from services.deletion.context import ContextDep, describe
from services.deletion.domain.stages import DeletionRequest
from shared.observability import Problem

router = APIRouter(tags=["users"])

#: How long a link works once its request is complete: time to keep the certificate.
#: Not for ever: the link stays in the browser's history (a page cannot take it out of
#: that list, only out of the address bar), where anyone using the browser could follow
#: it for as long as the ledger keeps the request.
WORKS_AFTER_COMPLETION = timedelta(days=90)


class StatusLinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=10, max_length=128, description="The secret from the link.")


@router.post("/status-links", response_model=FollowedDeletion)
async def followed_link(body: StatusLinkBody, context: ContextDep) -> dict[str, Any]:
    """The request the link was mailed for, as its user saw it when signed in (stages and
    dates), and its certificate once recorded. Nothing changes: the link can be followed
    any number of times, until 90 days after the request is complete."""
    async with context.runtime.pool.acquire() as conn:
        request_id = await status_links.request_of(conn, body.token)
        tracked = None if request_id is None else await store.get(conn, request_id)
        if tracked is None or _expired(tracked.request, context.deps.now()):
            raise Problem(
                400, "Link invalid",
                "This link is invalid, or it expired 90 days after the deletion was complete."
                " Write to us quoting the reference in the email to get its certificate.",
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


def _expired(request: DeletionRequest, now: datetime) -> bool:
    return request.stage == "complete" and now > request.stage_entered_at + WORKS_AFTER_COMPLETION
