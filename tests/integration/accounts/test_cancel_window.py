"""The cancel window on real PostgreSQL: a cancel accounts took is never confirmed for
erasure, and one that comes after the window closed is refused (P-15)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from services.accounts import cancel_window
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.accounts import DeletionCancelled, DeletionConfirmed
from shared.events.catalogue.deletion import DeletionStageChanged
from shared.events.topics import ACCOUNTS_LIFECYCLE


async def _request(pool: asyncpg.Pool, status: str = "requested") -> tuple[uuid.UUID, uuid.UUID]:
    request_id, user_id = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO deletion_requests (id, user_id, initiated_by, status)"
        " VALUES ($1, $2, 'user', $3)",
        request_id,
        user_id,
        status,
    )
    return request_id, user_id


def _stage(request_id: uuid.UUID, user_id: uuid.UUID, stage: str = "holds") -> DeletionStageChanged:
    return DeletionStageChanged(
        request_id=request_id, subject_id=user_id, stage=stage, entered_at=datetime.now(UTC)
    )


async def _published(pool: asyncpg.Pool, request_id: uuid.UUID) -> list[type]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", ACCOUNTS_LIFECYCLE.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [type(e) for e in events if getattr(e, "request_id", None) == request_id]


async def _status(pool: asyncpg.Pool, request_id: uuid.UUID) -> str:
    return str(
        await pool.fetchval("SELECT status FROM deletion_requests WHERE id = $1", request_id)
    )


@pytest.mark.promise("P-15")
async def test_the_end_of_grace_confirms_a_request_and_refuses_later_cancels(
    pool: asyncpg.Pool,
) -> None:
    request_id, user_id = await _request(pool)
    async with pool.acquire() as conn, conn.transaction():
        assert not await cancel_window.close(conn, _stage(request_id, user_id, "grace"))
        assert await cancel_window.close(conn, _stage(request_id, user_id))
    assert await _status(pool, request_id) == "confirmed"
    assert await _published(pool, request_id) == [DeletionConfirmed]

    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(cancel_window.NotCancellable) as refused:
            await cancel_window.cancel(conn, request_id, user_id)
    assert refused.value.status == "confirmed"
    assert await _status(pool, request_id) == "confirmed"
    assert await _published(pool, request_id) == [DeletionConfirmed]  # no DeletionCancelled


@pytest.mark.promise("P-15")
async def test_a_cancelled_request_is_never_confirmed(pool: asyncpg.Pool) -> None:
    request_id, user_id = await _request(pool)
    async with pool.acquire() as conn, conn.transaction():
        assert await cancel_window.cancel(conn, request_id, user_id) is not None
        assert await cancel_window.cancel(conn, request_id, uuid.uuid4()) is None  # not theirs
    async with pool.acquire() as conn, conn.transaction():
        assert not await cancel_window.close(conn, _stage(request_id, user_id))
    assert await _status(pool, request_id) == "cancelled"
    # Announced after the cancel, the deletion service cannot have taken it: told again.
    assert await _published(pool, request_id) == [DeletionCancelled, DeletionCancelled]


@pytest.mark.promise("P-15")
async def test_a_cancel_racing_the_end_of_grace_is_either_taken_or_refused(
    pool: asyncpg.Pool,
) -> None:
    """The cancel holds the row: the closing waits for it and then leaves it cancelled.
    The other way round, the cancel waits for the closing and is refused."""
    request_id, user_id = await _request(pool)
    async with pool.acquire() as first, first.transaction():
        assert await cancel_window.cancel(first, request_id, user_id) is not None

        async def close() -> bool:
            async with pool.acquire() as conn, conn.transaction():
                return await cancel_window.close(conn, _stage(request_id, user_id))

        closing = asyncio.create_task(close())
        await asyncio.sleep(0.3)
        assert not closing.done()  # waiting for the cancel's lock
    assert await closing is False
    assert set(await _published(pool, request_id)) == {DeletionCancelled}  # never confirmed

    request_id, user_id = await _request(pool)
    async with pool.acquire() as first, first.transaction():
        assert await cancel_window.close(first, _stage(request_id, user_id))

        async def cancel() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await cancel_window.cancel(conn, request_id, user_id)

        cancelling = asyncio.create_task(cancel())
        await asyncio.sleep(0.3)
        assert not cancelling.done()
    with pytest.raises(cancel_window.NotCancellable):
        await cancelling
    assert await _published(pool, request_id) == [DeletionConfirmed]


async def test_a_request_accounts_does_not_hold_is_confirmed(pool: asyncpg.Pool) -> None:
    """Its subject went with another request: nothing is left to cancel, and a deletion
    that waited for an answer would wait for ever."""
    request_id, user_id = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        assert await cancel_window.close(conn, _stage(request_id, user_id))
    assert await _published(pool, request_id) == [DeletionConfirmed]
    erased, erased_user = await _request(pool, "erased")
    async with pool.acquire() as conn, conn.transaction():
        assert await cancel_window.close(conn, _stage(erased, erased_user))
    assert await _status(pool, erased) == "erased"
