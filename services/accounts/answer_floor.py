"""Answers that take no less than a floor, so their time says nothing.

Where one answer body stands for two outcomes (an address registered or not), the
outcomes still cost different work: a new account seals fields and commits several
rows, a taken address only reads one. Answering no sooner than a fixed floor, longer
than either, keeps the difference from being timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

#: Longer than either outcome takes, even on a busy machine (a few queries, or sealing
#: a few fields and committing a sign-up's rows).
ANSWER_FLOOR_SECONDS = 0.2


@asynccontextmanager
async def answer_floor(seconds: float = ANSWER_FLOOR_SECONDS) -> AsyncIterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
