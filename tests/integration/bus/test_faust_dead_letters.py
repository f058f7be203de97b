"""A Faust worker dead-letters a record once, however often it reads it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from shared.bus.faust_app import publish_dead_letter
from shared.db.pool import create_pool


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send_and_wait(self, *args: Any) -> None:
        self.sent.append(args)


def _message(offset: int) -> Any:
    """A record as Faust hands it to an agent (the attributes the DLQ reads)."""
    return SimpleNamespace(
        topic="analytics.visits.x", partition=2, offset=offset, timestamp=1764700000.5,
        key=None, value=b"not json", headers=[("ce_type", b"visit.recorded.v1")],
    )  # fmt: skip


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(scratch_dsn, max_size=2)
    yield pool
    await pool.close()


async def test_a_record_read_again_is_not_dead_lettered_twice(pool: asyncpg.Pool) -> None:
    producer = _Producer()
    app: Any = SimpleNamespace(producer=producer)

    # Read, dead-lettered, then read again: the worker died before Faust's offset commit.
    await publish_dead_letter(app, _message(7), "not JSON", "analytics-aggregator", pool)
    await publish_dead_letter(app, _message(7), "not JSON", "analytics-aggregator", pool)
    assert [s[0] for s in producer.sent] == ["analytics.visits.x.dlq"]

    # Another record, or the same one for another consumer, is a letter of its own.
    await publish_dead_letter(app, _message(8), "not JSON", "analytics-aggregator", pool)
    await publish_dead_letter(app, _message(7), "not JSON", "another-group", pool)
    assert len(producer.sent) == 3
