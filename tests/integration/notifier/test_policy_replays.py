"""A policy version read after a later one took effect (its dead letter replayed days
on) is not announced (P-23): every user would be told, pinned and by email, of a policy
that no longer binds them. One read before the later one takes effect is announced: it
is the policy in force until then."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import asyncpg

from services.notifier import handlers, store
from shared.bus.delivery import Delivery
from shared.events import envelope_for
from shared.events.catalogue.accounts import PolicyVersionPublished
from shared.events.topics import POLICY_VERSIONS


def _published(version: str, effective_in_days: float, offset_hours: float = 0) -> Delivery:
    """Effective that many days from now, written in an operator's offset."""
    zone = timezone(timedelta(hours=offset_hours))
    event = PolicyVersionPublished(
        policy_version=version,
        summary=f"What changed in {version}",
        effective_at=(datetime.now(UTC) + timedelta(days=effective_in_days)).astimezone(zone),
    )
    envelope = envelope_for(event, source="accounts", subject=version)
    return Delivery(envelope, event, None, POLICY_VERSIONS.name, 0, 0)


async def _announced(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT params->>'policy_version' AS v FROM notices WHERE template = 'policy_change'"
    )
    return {r["v"] for r in rows}


async def _read(pool: asyncpg.Pool, *published: Delivery) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handlers.on_notices(conn, list(published))


async def test_a_version_read_after_a_later_one_took_effect_is_not_announced(
    pool: asyncpg.Pool,
) -> None:
    await _read(pool, _published("2031-01", -60), _published("2031-03", -2))  # 2031-02 lost
    await _read(pool, _published("2031-02", -30))  # ... and replayed after 2031-03 took effect
    assert await _announced(pool) == {"2031-01", "2031-03"}


async def test_a_version_read_before_a_later_one_takes_effect_is_announced(
    pool: asyncpg.Pool,
) -> None:
    """Until 2031-06 takes effect, 2031-05 is the policy in force: users are told of it."""
    await _read(pool, _published("2031-04", -10), _published("2031-06", 60))
    await _read(pool, _published("2031-05", 30))
    assert await _announced(pool) == {"2031-04", "2031-05", "2031-06"}


async def test_a_policy_notice_dated_by_no_day_stops_no_later_version(
    pool: asyncpg.Pool,
) -> None:
    """A SendNotice may name the policy_change template with any text for its date: it
    neither counts as a version in force nor fails the versions read after it."""
    odd = store.Notice(
        notice_id=uuid.uuid4(), template="policy_change", category="policy_change",
        audience="listed", user_ids=(uuid.uuid4(),),
        params={"policy_version": "odd", "summary": "s", "effective_at": "soon"},
        channels=("inbox",), recipient="user", pinned=True, source="accounts",
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, odd)
    await _read(pool, _published("2031-07", 10))
    assert await _announced(pool) == {"odd", "2031-07"}


async def test_a_version_to_come_in_an_operators_offset_supersedes_nothing_yet(
    pool: asyncpg.Pool,
) -> None:
    """Two hours from now, written at UTC-23:00, is yesterday or today on its own
    calendar: taken by its day, it counted as in force and silenced the version in force."""
    await _read(pool, _published("2032-01", -10), _published("2032-03", 2 / 24, -23))
    await _read(pool, _published("2032-02", -5))
    assert await _announced(pool) == {"2032-01", "2032-02", "2032-03"}


async def test_the_policy_email_dates_the_version_by_its_utc_day(pool: asyncpg.Pool) -> None:
    """accounts' GET /policy/current and the pages give the UTC day; the email said the
    operator's own, a day off either side of UTC."""
    read = _published("2032-04", 10, offset_hours=-10)
    await _read(pool, read)
    params = await pool.fetchval(
        "SELECT params FROM notices WHERE params->>'policy_version' = '2032-04'"
    )
    assert isinstance(read.event, PolicyVersionPublished)
    instant = read.event.effective_at.astimezone(UTC)
    assert params["effective_at"] == instant.date().isoformat()
    assert datetime.fromisoformat(params["effective_from"]) == instant
