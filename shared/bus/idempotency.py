"""Recording processed events in the consumer's database, with the effect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from shared.db.pool import Connection

_MARK = """
INSERT INTO bus_processed_events (consumer, event_id)
SELECT $1, id FROM unnest($2::uuid[]) AS id
ON CONFLICT DO NOTHING
RETURNING event_id
"""


async def mark_processed(conn: Connection, consumer: str, event_ids: Sequence[UUID]) -> set[UUID]:
    """Mark ids as processed by ``consumer``; return those not processed before.

    Call inside the transaction that applies the effects: if it rolls back, the marks
    go with it and the events will be applied on redelivery.
    """
    if not event_ids:
        return set()
    rows = await conn.fetch(_MARK, consumer, list(event_ids))
    return {r["event_id"] for r in rows}


async def was_processed(conn: Connection, consumer: str, event_id: UUID) -> bool:
    """Whether ``consumer`` marked ``event_id`` (outside a transaction: a peek)."""
    found = await conn.fetchval(
        "SELECT 1 FROM bus_processed_events WHERE consumer = $1 AND event_id = $2",
        consumer,
        event_id,
    )
    return found is not None


async def forget_processed_before(conn: Connection, age: timedelta) -> int:
    """Drop marks older than any record Kafka can still redeliver (topic retention)."""
    result = await conn.execute(
        "DELETE FROM bus_processed_events WHERE processed_at < now() - $1::interval", age
    )
    return int(result.split()[-1])
