"""The send-rate limit of one SMTP server, shared by every notifier worker process.

The bucket lives in the notifier's database (``smtp_send_pace``, one row per server,
GCRA in :func:`store.take_send_slots`), so two workers on the same server share one
limit instead of each having their own. A worker takes slots in blocks, one statement
per block, and spends them locally: the database sees one round trip per block, not
per email. The next block is fetched while the last few slots are spent, so the
senders do not stall on that round trip.

A slot not spent within :data:`HOLD_SECONDS` of its grant is dropped: budget can be
lost (never exceeded), and a worker cannot hoard slots and spend them later in a
burst beyond the bucket's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from services.notifier import store
from shared.bus.consumer import OUTAGES

log = logging.getLogger(__name__)

HOLD_SECONDS = 0.5
MIN_BURST = 10  # slots: the bucket's depth is at least this, and at least one block


class SendPace:
    """Send slots for one SMTP server, taken from the shared bucket in blocks."""

    def __init__(self, pool: asyncpg.Pool, server: str, per_second: float, block: int) -> None:
        self._pool = pool
        self._server = server
        self._interval = 1.0 / per_second
        self._block = max(1, block)
        self._burst = max(MIN_BURST, self._block) * self._interval
        self._slots = 0
        self._expires = 0.0
        self._refill: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        """Wait for one send slot (waits out database outages: nothing is sent then)."""
        while True:
            if self._slots and time.monotonic() < self._expires:
                self._slots -= 1
                if self._slots <= self._block // 4:
                    self._start_refill()  # the next block arrives while these are spent
                return
            self._slots = 0  # none left, or held too long: dropped
            self._start_refill()
            assert self._refill is not None
            await asyncio.shield(self._refill)

    async def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill

    def _start_refill(self) -> None:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._take())

    async def _take(self) -> None:
        while True:
            try:
                async with self._pool.acquire() as conn:
                    granted, wait = await store.take_send_slots(
                        conn, self._server, self._block, self._interval, self._burst
                    )
            except OUTAGES as exc:
                log.warning("send pace: outage (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            except Exception:  # the senders wait on this: it must not die
                log.exception("send pace: taking slots failed")
                await asyncio.sleep(1.0)
                continue
            if granted:
                fresh = time.monotonic() < self._expires
                self._slots = (self._slots if fresh else 0) + granted
                self._expires = time.monotonic() + HOLD_SECONDS
                return
            if self._slots and time.monotonic() < self._expires:
                return  # a prefetch found the bucket empty: spend what is left first
            await asyncio.sleep(max(wait, 0.001))
