"""Periodic loops of workers: woken, a round starts at once, not at the interval's end."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.service.periodic import Periodic


class _Counting(Periodic):
    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0
        self.ran = asyncio.Event()

    def interval(self) -> float:
        return 3600.0  # an hour: only a wake can start the next round within the test

    async def round(self) -> bool:
        self.rounds += 1
        self.ran.set()
        return False


async def _next_round(loop: _Counting) -> None:
    loop.ran.clear()
    await asyncio.wait_for(loop.ran.wait(), 10)


async def test_a_wake_starts_the_next_round_and_stop_ends_the_loop() -> None:
    loop = _Counting()
    task: asyncio.Task[Any] = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.ran.wait(), 10)
    assert loop.rounds == 1
    for expected in (2, 3):
        waiting = asyncio.create_task(_next_round(loop))
        await asyncio.sleep(0)
        loop.wake()
        await waiting
        assert loop.rounds == expected
    loop.stop()
    await asyncio.wait_for(task, 10)
    assert loop.rounds == 3
