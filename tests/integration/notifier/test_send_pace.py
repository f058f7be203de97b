"""The send-rate limit is per SMTP server: every worker process takes from one bucket."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from services.notifier.pace import MIN_BURST, SendPace

RATE = 40.0
SECONDS = 3.0  # long enough that a pause of the machine costs little of the count


async def sends_within(paces: list[SendPace], seconds: float) -> list[int]:
    """How many slots each pace hands out, with two senders each, in ``seconds``."""
    counts = [0] * len(paces)
    deadline = time.monotonic() + seconds

    async def sender(n: int) -> None:
        while True:
            await paces[n].acquire()
            if time.monotonic() > deadline:
                return
            counts[n] += 1

    await asyncio.gather(*(sender(n) for n in range(len(paces)) for _ in range(2)))
    for pace in paces:
        await pace.close()
    return counts


async def test_two_workers_on_one_server_share_its_limit(pool: asyncpg.Pool) -> None:
    workers = [SendPace(pool, "smtp.example:25", RATE, block=4) for _ in range(2)]
    counts = await sends_within(workers, SECONDS)
    # The bucket starts full (MIN_BURST slots), then refills at RATE; one worker alone
    # would have had the whole RATE too, so two per-process limits would send twice this.
    assert sum(counts) <= RATE * SECONDS + MIN_BURST + 1
    assert sum(counts) >= 0.5 * RATE * SECONDS  # paced, not stalled
    assert all(c > 0 for c in counts), counts  # neither worker is starved


async def test_each_server_has_its_own_limit(pool: asyncpg.Pool) -> None:
    paces = [SendPace(pool, f"smtp{n}.example:25", RATE, block=4) for n in range(2)]
    # Longer than SECONDS: each server gets ~210 slots, and the sum (~420) stays past one
    # bucket's most (211) through a pause of the machine of ~2.5 s, lost to both servers.
    seconds = 5.0
    counts = await sends_within(paces, seconds)
    one_bucket = RATE * seconds + MIN_BURST + 1  # the most a single limit hands out
    # Together more than one limit could give: two buckets. Each within its own limit,
    # and served (a loose floor: a pause of the machine costs each server its slots).
    assert sum(counts) > one_bucket, counts
    for count in counts:
        assert 0.3 * RATE * seconds <= count <= one_bucket, counts
