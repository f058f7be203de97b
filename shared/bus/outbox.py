"""Writing to the transactional outbox, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence

from shared.db.pool import Connection
from shared.events import Envelope, Event, encode_envelope, envelope_for
from shared.events.topics import Topic

# ORDER BY the array position: rows take their seq (the relay's publishing order, so
# each key's order) in the order given, which an unordered SELECT does not promise.
_INSERT_TEMPLATE = """
INSERT INTO bus_outbox (topic, key, value, headers, event_id)
SELECT t, k, v, h::jsonb, id
FROM unnest(${0}::text[], ${1}::bytea[], ${2}::bytea[], ${3}::text[], ${4}::uuid[])
     WITH ORDINALITY AS u(t, k, v, h, id, position)
{where}ORDER BY position
"""


async def add_envelopes(conn: Connection, topic: str, envelopes: Sequence[Envelope]) -> None:
    """Queue envelopes for ``topic``; they publish only if the transaction commits."""
    await _insert(conn, [topic] * len(envelopes), envelopes)


def insert_sql(first: int = 1, where: str = "") -> str:
    """The outbox insert, its five arrays in parameters ``$first`` to ``$first+4``; rows
    keep the order given. With ``where`` (a condition), a statement can queue its events
    only if its own change happened (see :func:`outbox_arrays`)."""
    return _INSERT_TEMPLATE.format(
        *range(first, first + 5), where=f"WHERE {where}\n" if where else ""
    )


_INSERT = insert_sql()


def outbox_arrays(
    events: Sequence[tuple[Event, str | None]], *, source: str
) -> tuple[list[Envelope], list[list[object]]]:
    """Envelopes for (event, subject) pairs and the five arrays :func:`insert_sql` takes."""
    envelopes = [envelope_for(event, source=source, subject=subject) for event, subject in events]
    return envelopes, _arrays([event.topic.name for event, _ in events], envelopes)


def _arrays(topics: Sequence[str], envelopes: Sequence[Envelope]) -> list[list[object]]:
    return [
        list(topics),
        [e.key() for e in envelopes],
        [encode_envelope(e) for e in envelopes],
        [json.dumps({k: v.decode() for k, v in e.headers()}) for e in envelopes],
        [e.id for e in envelopes],
    ]


async def _insert(conn: Connection, topics: Sequence[str], envelopes: Sequence[Envelope]) -> None:
    if not envelopes:
        return
    await conn.execute(_INSERT, *_arrays(topics, envelopes))


async def add_event(
    conn: Connection,
    event: Event,
    *,
    source: str,
    subject: str | None,
    traceparent: str | None = None,
) -> Envelope:
    """Queue one event on its declared topic; returns the envelope written."""
    return (await add_events(conn, [(event, subject)], source=source, traceparent=traceparent))[0]


async def add_events(
    conn: Connection,
    events: Sequence[tuple[Event, str | None]],
    *,
    source: str,
    traceparent: str | None = None,
) -> list[Envelope]:
    """Queue (event, subject) pairs, each on its declared topic, in one statement and in
    this order; returns the envelopes written."""
    envelopes = [
        envelope_for(event, source=source, subject=subject, traceparent=traceparent)
        for event, subject in events
    ]
    await _insert(conn, [event.topic.name for event, _ in events], envelopes)
    return envelopes


async def add_tombstones(conn: Connection, topic: Topic, keys: Sequence[str]) -> None:
    """Queue tombstones for many keys in one statement."""
    await conn.execute(
        "INSERT INTO bus_outbox (topic, key, value)"
        " SELECT $1, k, NULL FROM unnest($2::bytea[]) WITH ORDINALITY AS u(k, n) ORDER BY n",
        topic.name,
        [key.encode() for key in keys],
    )


async def add_tombstone(conn: Connection, topic: Topic, key: str) -> None:
    """Queue a tombstone: on a compacted topic it removes ``key`` once compaction runs."""
    await conn.execute(
        "INSERT INTO bus_outbox (topic, key, value) VALUES ($1, $2, NULL)",
        topic.name,
        key.encode(),
    )
