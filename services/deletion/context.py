"""What every route of the deletion API gets: settings, runtime, handler dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from services.deletion import store
from services.deletion.config import DeletionSettings
from services.deletion.domain.schedule import (
    cancellable_until,
    ccpa_deadline,
    gdpr_deadline,
    overdue,
    stage_dates,
)
from services.deletion.handlers import Deps
from services.deletion.store import Tracked
from shared.db import Connection
from shared.service import Runtime


@dataclass
class Context:
    settings: DeletionSettings
    runtime: Runtime
    deps: Deps


def _context(request: Request) -> Context:
    context: Context = request.app.state.deletion
    return context


ContextDep = Annotated[Context, Depends(_context)]


async def describe(conn: Connection, context: Context, tracked: Tracked) -> dict[str, Any]:
    """A request as its user sees it: stage, and the date of every remaining stage."""
    r = tracked.request
    now = context.deps.now()
    history: dict[str, datetime] = {}
    for row in await store.history(conn, r.request_id):
        history.setdefault(row["stage"], row["entered_at"])
    # Once erased, the snapshots that hold the subject; before, those taken so far (one
    # kept longer than the usual retention may outlive those taken until the erasure).
    holding = await store.snapshots_holding(conn, r.erased_at or now)
    backups_done_by = max((s["expires_at"] for s in holding), default=None)
    if backups_done_by is None and r.erased_at is not None:
        backups_done_by = now  # none left: the backups are done
    dates = stage_dates(r, context.deps.timing, now, history, backups_done_by)  # type: ignore[arg-type]
    certificate = await store.certificate(conn, r.request_id)
    until = cancellable_until(r, now)
    return {
        "request_id": str(r.request_id),
        "scope": r.scope,
        "item_id": str(r.item_id) if r.item_id else None,
        "stage": r.stage,
        "on_hold": r.stage == "paused",
        "requested_at": r.requested_at.isoformat(),
        "cancellable_until": until.isoformat() if until else None,
        "stages": [
            {
                "stage": d.stage,
                "done_at": d.done_at.isoformat() if d.done_at else None,
                "expected_by": d.expected_by.isoformat() if d.expected_by else None,
            }
            for d in dates
        ],
        "legal_deadlines": {
            "gdpr": gdpr_deadline(r.requested_at).isoformat(),
            "ccpa": ccpa_deadline(r.requested_at).isoformat(),
        },
        "overdue": overdue(r, now),
        "certificate_digest": certificate["digest"] if certificate else None,
    }
