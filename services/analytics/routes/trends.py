"""Trends: the operators' view (aggregates only) and k-suppressed releases.

Every answer is a release recorded with its privacy receipt (audience, k, epsilon,
cells published and suppressed), returned with it. Releases of a day under different k
nest (the larger k hides all the smaller one does; ``domain/release.py``), so a k may
change, or two audiences hold two k, without two releases together giving a cell away.
Without 'from' or 'to', a range is the two days up to now (for a threshold release, up
to its final days). An answer holds at most IMT_ANALYTICS_MAX_RELEASE_WINDOWS windows:
one cut short says so ('truncated') and its 'to' is where it stops.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, Field

from services.analytics import handlers, store
from services.analytics.config import AnalyticsSettings
from services.analytics.domain.release import Cell, ReleasedWindow
from shared.auth import Claims, require_roles
from shared.db.pool import Connection
from shared.observability import Problem
from shared.service.answers import Answer, Timestamp
from shared.service.api import OPERATORS_ONLY

router = APIRouter(tags=["trends"])


class TrendCell(Answer):
    """A window's count for one value of a dimension, or its total (no dimension)."""

    dimension: str | None = Field(None, description="page, referrer, device...; absent: the total.")
    value: str | None = Field(None, description="The dimension's value; absent for the total.")
    visits: int
    unique_visitors: int
    load_time_p50_ms: float | None
    load_time_p95_ms: float | None


class TrendWindow(Answer):
    window_start: Timestamp
    window_end: Timestamp
    total: TrendCell | None
    cells: list[TrendCell] = Field(description="Those at or over the release's k only.")
    suppressed_cells: int


class ReleaseReceipt(Answer):
    """The release's privacy receipt, as recorded."""

    release_id: UUID
    audience: Literal["operator", "partner", "public"]
    k: int = Field(description="Cells counting fewer visitors are suppressed.")
    epsilon: float | None = Field(description="The noise's privacy budget; null: no noise.")
    windows: int
    cells_published: int
    cells_suppressed: int = Field(description="Of the windows listed.")
    released_at: Timestamp


class TrendsRelease(Answer):
    site: str
    grain: Literal["minute", "hour", "day"]
    from_: Timestamp = Field(alias="from")
    to: Timestamp = Field(description="Where the answer stops (see truncated).")
    truncated: bool = Field(description="More windows follow: ask again from 'to'.")
    final_before: Timestamp | None = Field(
        None,
        description="Partner and public releases: only days ending before it, which can"
        " no longer change, are released. Absent from operators' view.",
    )
    windows: list[TrendWindow] = Field(
        description="Oldest first; one suppressed whole is left out."
    )
    receipt: ReleaseReceipt


# The keys a release leaves out stay out (response_model_exclude_unset): final_before,
# a total's dimension.

Analyst = Annotated[Claims, Depends(require_roles("analyst", "admin"))]
Grain = Literal["minute", "hour", "day"]
SITE_PATTERN = r"^[a-z0-9.-]{1,253}$"
# A range given by one bound or none spans this much (docs: "the two days up to now").
DEFAULT_SPAN = timedelta(days=2)
FROM = "Start of the range (ISO 8601 with zone); default: two days before 'to'."
TO = (
    "End of the range, excluded (ISO 8601 with zone); default: now (partner and public: "
    "'final_before'), or two days after a 'from' at or after that. The answer's 'to' is "
    "where it stops: earlier, with 'truncated' true, if the range held more windows than "
    "one answer takes."
)


class _Range:
    def __init__(
        self,
        site: Annotated[str, Query(pattern=SITE_PATTERN)],
        grain: Grain = "hour",
        start: Annotated[AwareDatetime | None, Query(alias="from", description=FROM)] = None,
        end: Annotated[AwareDatetime | None, Query(alias="to", description=TO)] = None,
    ) -> None:
        self.site = site
        self.grain: Grain = grain
        self._asked = (start, end)
        self.start, self.end = self._bounds(start, end, datetime.now(UTC))

    def final(self, final_before: datetime) -> None:
        """Without 'to', a threshold release ends where final days end (not now).
        (Days from then on are left out of it whatever the range.)"""
        start, end = self._asked
        if end is None:
            self.start, self.end = self._bounds(start, None, final_before)

    @staticmethod
    def _bounds(
        start: datetime | None, end: datetime | None, default_end: datetime
    ) -> tuple[datetime, datetime]:
        try:  # in UTC, as stored: a bound at the very ends of time cannot be one
            if end is None:
                # A 'from' at or after the default end gets the span from it: without a
                # 'to', "'from' must be before 'to'" would make no sense.
                late = start is not None and start >= default_end
                end = start + DEFAULT_SPAN if late and start else default_end
            end = end.astimezone(UTC)
            start = (start or end - DEFAULT_SPAN).astimezone(UTC)
        except OverflowError:
            raise Problem(422, "Invalid range", "Dates out of range.", slug="range") from None
        if start >= end:
            raise Problem(422, "Invalid range", "'from' must be before 'to'.", slug="range")
        return start, end


Range = Annotated[_Range, Depends()]


@router.get(
    "/trends",
    openapi_extra=OPERATORS_ONLY,
    response_model=TrendsRelease,
    response_model_exclude_unset=True,
)
async def operator_trends(request: Request, _: Analyst, query: Range) -> dict[str, Any]:
    """Aggregates of a site's windows, unsuppressed (analysts and admins only). At
    most ``IMT_ANALYTICS_MAX_RELEASE_WINDOWS`` windows, oldest first: an answer with
    more in its range has ``truncated`` true and ends (``to``) where the first window
    left out starts; ask again from there for the rest."""
    return await _release(request, "operator", query, k=1, epsilon=None)


@router.get(
    "/trends/partner",
    openapi_extra=OPERATORS_ONLY,
    response_model=TrendsRelease,
    response_model_exclude_unset=True,
)
async def partner_trends(request: Request, _: Analyst, query: Range) -> dict[str, Any]:
    """The release analysts hand to partners: cells under the partner k suppressed
    (hour and day windows of final days). It covers at most
    ``IMT_ANALYTICS_MAX_RELEASE_WINDOWS`` / 25 days from the day of ``from``: a longer
    range has ``truncated`` true and ``to`` at the end of the last day covered."""
    settings: AnalyticsSettings = request.app.state.settings
    _no_minutes(query)
    return await _release(
        request, "partner", query, settings.analytics_partner_k, settings.analytics_partner_epsilon
    )


@router.get("/trends/public", response_model=TrendsRelease, response_model_exclude_unset=True)
async def public_trends(request: Request, query: Range) -> dict[str, Any]:
    """Public trends: no account needed; cells under the public k suppressed (hour
    and day windows of final days), and everything the partners' release hides. Long
    ranges are cut as for partners (``truncated``, ``to``)."""
    settings: AnalyticsSettings = request.app.state.settings
    _no_minutes(query)
    return await _release(
        request,
        "public",
        query,
        settings.analytics_public_k,
        settings.analytics_public_epsilon,
    )


def _no_minutes(query: _Range) -> None:
    """Minute windows are operators' only. Their cells are nearly all under any k, and
    a public minute release would tie each day's hours to their minutes: a family too
    big to audit per request, and one that outlives minute windows' retention."""
    if query.grain == "minute":
        raise Problem(
            422, "Grain not released", "Minute trends are for operators; ask for 'hour' or "
            "'day'.", slug="grain",
        )  # fmt: skip


MAX_SUPPRESSED_DAYS = 400


class SuppressedDay(Answer):
    day: date
    signal: str = Field(description="Why they were dropped: dnt, gpc, under_13, opted_out...")
    count: int


class SuppressedVisits(Answer):
    since: date
    counts: list[SuppressedDay] = Field(description="Per day and signal, oldest first.")


@router.get("/suppressed", openapi_extra=OPERATORS_ONLY, response_model=SuppressedVisits)
async def suppressed_visits(
    request: Request,
    _: Analyst,
    days: Annotated[int, Query(ge=0, le=MAX_SUPPRESSED_DAYS)] = 30,
) -> dict[str, Any]:
    """How many visits each privacy signal dropped, per day (nothing else is kept)."""
    since = datetime.now(UTC).date() - timedelta(days=days)
    conn: Connection
    async with request.app.state.pool.acquire() as conn:
        rows = await store.suppressed_counts(conn, since)
    return {"since": since, "counts": rows}


async def _release(
    request: Request,
    audience: str,
    query: _Range,
    k: int,
    epsilon: float | None,
) -> dict[str, Any]:
    settings: AnalyticsSettings = request.app.state.settings
    lateness = timedelta(hours=settings.analytics_visitor_set_hours)
    final = None if k <= 1 else handlers.final_before(datetime.now(UTC), lateness)
    if final is not None:
        query.final(final)
    stored, result, receipt = await handlers.release_trends(
        request.app.state.pool,
        handlers.ReleaseRequest(
            audience, query.site, query.grain, query.start, query.end, k, epsilon, final
        ),
        request.app.state.noise,
        settings.analytics_max_release_windows,
    )
    windows = [
        _window(w.window_start, w.window_end, released)
        for w, released in zip(stored, result.windows, strict=True)
        # A window suppressed whole is left out: even its existence says someone came.
        if released.total is not None
    ]
    return {
        "site": query.site,
        "grain": query.grain,
        "from": query.start,
        # Where the answer stops: 'to', or earlier if the range held more windows than
        # one answer takes (ask again from here for the rest).
        "to": receipt.end,
        "truncated": receipt.truncated,
        # With a threshold, only days that can no longer change are released.
        **({} if final is None else {"final_before": final}),
        "windows": windows,
        "receipt": {
            "release_id": receipt.release_id,
            "audience": audience,
            "k": k,
            "epsilon": epsilon,
            "windows": len(windows),
            "cells_published": result.cells_published,
            # Of the windows listed only: counting the cells of a window left out whole
            # would say that it exists, and how many pages, referrers and devices it had.
            "cells_suppressed": sum(w["suppressed_cells"] for w in windows),
            "released_at": receipt.released_at,
        },
    }


def _window(start: datetime, end: datetime, released: ReleasedWindow) -> dict[str, Any]:
    return {
        "window_start": start,
        "window_end": end,
        "total": None if released.total is None else _cell(released.total),
        "cells": [_cell(c) for c in released.cells],
        "suppressed_cells": released.suppressed,
    }


def _cell(cell: Cell) -> dict[str, Any]:
    out: dict[str, Any] = {
        "visits": cell.visits,
        "unique_visitors": cell.unique_visitors,
        "load_time_p50_ms": cell.load_time_p50_ms,
        "load_time_p95_ms": cell.load_time_p95_ms,
    }
    if cell.dimension != "total":
        out = {"dimension": cell.dimension, "value": cell.value, **out}
    return out
