"""The beacon endpoints (one view, or a batch) and the GPC well-known file: no account,
no cookie (P-22).

Order matters: signals that forbid tracking (DNT, GPC, a signed-in child or opted-out
user) are honoured before any beacon is read (of a batch, only its length, to count the
views dropped), and the answer is 204 whether the visits were counted or dropped, so a
page cannot tell which.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter
from pydantic import Field

from services.analytics import handlers
from services.analytics.config import AnalyticsSettings
from services.analytics.domain.beacon import (
    Beacon,
    MalformedBeacon,
    is_bot,
    parse_beacon,
    parse_beacons,
)
from services.analytics.domain.signals import (
    Suppression,
    claims_suppression,
    header_suppression,
)
from shared.auth import Claims, InvalidToken, verify_token
from shared.observability import Problem
from shared.service.answers import Answer

router = APIRouter(tags=["collector"])

GPC_LAST_UPDATE = "2025-01-01"
ACCEPTED_TYPES = ("application/json", "text/plain")
NO_STORE = {"Cache-Control": "no-store"}


class GpcSupport(Answer):
    """The GPC support resource (Global Privacy Control, section 3.5)."""

    gpc: bool = Field(description="The site honours the Sec-GPC signal.")
    lastUpdate: str = Field(description="When this resource last changed (YYYY-MM-DD).")


@router.get("/.well-known/gpc.json", response_model=GpcSupport)
async def gpc() -> dict[str, Any]:
    """Global Privacy Control support (serve at the site root through the gateway)."""
    return {"gpc": True, "lastUpdate": GPC_LAST_UPDATE}


RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "Received (counted, or dropped because of a privacy signal)."},
    400: {"description": "Malformed beacon (in a batch: the first one, by its index)."},
    403: {"description": "Automated client."},
    413: {"description": "Body over the size limit."},
    415: {"description": "Neither JSON nor text/plain."},
    422: {"description": "A site whose visits are not counted (IMT_ANALYTICS_SITES)."},
}


@router.post("/beacon", status_code=204, responses=RESPONSES)
async def beacon(request: Request) -> Response:
    """A page or screen view. JSON body, sent as application/json or as text/plain (what
    ``navigator.sendBeacon`` sends for a string): ``beacon_id`` (UUID), ``site``,
    ``page`` or ``screen``, and optionally ``referrer``, ``device_class``, ``load_time_ms``."""
    limit: int = request.app.state.max_beacon_bytes
    return await _collect(request, limit, 1, lambda body: [parse_beacon(body)])


@router.post("/beacons", status_code=204, responses=RESPONSES)
async def beacons(request: Request) -> Response:
    """Several views at once: a JSON array of beacons as ``/beacon`` takes them (an app's
    queue of screen views sent when it is back online, or a page's views sent once when
    it is hidden). All are taken or none: a malformed one refuses the batch, naming its
    index. The privacy signals of the request apply to every view in it."""
    settings: AnalyticsSettings = request.app.state.settings
    most = settings.analytics_max_batch_beacons
    return await _collect(
        request, settings.analytics_max_batch_bytes, most, lambda body: parse_beacons(body, most)
    )


async def _collect(
    request: Request, limit: int, most: int, parse: Callable[[bytes], list[Beacon]]
) -> Response:
    collector: handlers.Collector = request.app.state.collector
    body = await _bounded_body(request, limit)

    suppression = header_suppression(request.headers) or _token_suppression(request)
    if suppression is not None:
        # Counted, not read: a dropped batch is parsed no further than its length.
        views = _views(body, most)
        suppressed: Counter = request.app.state.suppressed_counter
        suppressed.labels(suppression.value).inc(views)
        await handlers.record_suppressed(collector, suppression, views)
        return Response(status_code=204, headers=NO_STORE)

    user_agent = request.headers.get("user-agent", "")
    if is_bot(user_agent):
        raise Problem(403, "Automated client", "Visits of bots are not collected.", slug="bot")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise Problem(415, "Unsupported media type", "Send JSON (application/json or "
                      "text/plain).", slug="unsupported-media-type")  # fmt: skip
    try:
        parsed = parse(body)
    except MalformedBeacon as exc:
        raise Problem(400, "Malformed beacon", str(exc), slug="malformed-beacon") from None
    _refuse_unknown_sites(request, parsed, most)
    try:
        await handlers.collect(collector, parsed, _client_address(request), user_agent)
    except KafkaError:
        raise Problem(503, "Unavailable", "Try again later.", slug="unavailable") from None
    return Response(status_code=204, headers=NO_STORE)


def _refuse_unknown_sites(request: Request, parsed: list[Beacon], most: int) -> None:
    """Only iMT's own sites are counted: each site is windows of its own, so anyone
    could otherwise fill the database with sites of their making. A batch is refused
    whole, naming its first beacon of another site by index (never the site: a problem
    body repeats nothing of the request)."""
    settings: AnalyticsSettings = request.app.state.settings
    sites = settings.collected_sites
    for index, beacon in enumerate(parsed):
        if beacon.site not in sites:
            where = "" if most == 1 else f"beacon {index}: "
            raise Problem(422, "Unknown site", f"{where}the visits of this site are not "
                          "counted.", slug="unknown-site")  # fmt: skip


def _views(body: bytes, most: int) -> int:
    """How many views a suppressed body held: a batch's length (at most ``most``, so a
    forged one cannot inflate the count), else one."""
    if most == 1:
        return 1
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return 1
    return min(most, max(1, len(data))) if isinstance(data, list) else 1


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> Problem:
    return Problem(413, "Beacon too large", f"Beacons are limited to {limit} bytes.",
                   slug="beacon-too-large")  # fmt: skip


def _token_suppression(request: Request) -> Suppression | None:
    authorization = request.headers.get("authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    claims: Claims | None = None
    if scheme.lower() == "bearer" and token.strip():
        try:
            claims = verify_token(request.app.state.token_public_key, token.strip())
        except InvalidToken:
            claims = None
    return claims_suppression(claims, token_sent=True)


def _client_address(request: Request) -> str:
    # Not the raw X-Forwarded-For: any caller reaching the API itself (a container on the
    # compose network) could invent a visitor per request with it. The app resolved the
    # client from it only when the peer is a trusted proxy (shared.service.forwarded).
    return request.client.host if request.client else ""
