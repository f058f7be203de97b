"""The sender's helpers (its SMTP connections and recorder) never end silently."""

from __future__ import annotations

import asyncio

import pytest

from services.notifier.sender import run_supervised


async def _forever() -> None:
    await asyncio.Event().wait()


async def _fails() -> None:
    await asyncio.sleep(0.01)
    raise KeyError("a bug")


async def test_a_helper_that_dies_ends_the_sender_with_its_cause() -> None:
    helper = asyncio.create_task(_fails(), name="connection 0")
    with pytest.raises(RuntimeError, match="its connection 0 ended") as raised:
        await asyncio.wait_for(run_supervised(_forever(), [helper]), 5)
    assert isinstance(raised.value.__cause__, KeyError)


async def test_the_main_loop_ending_ends_the_supervision_and_leaves_helpers_running() -> None:
    helper = asyncio.create_task(_forever())
    await asyncio.wait_for(run_supervised(asyncio.sleep(0.01), [helper]), 5)
    assert not helper.done()
    helper.cancel()


async def test_a_cancelled_supervision_cancels_the_main_loop_too() -> None:
    """The sender cancelled from outside: its dispatcher must not go on leasing alone."""
    started, ended = asyncio.Event(), asyncio.Event()

    async def main() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    helper = asyncio.create_task(_forever())
    supervision = asyncio.create_task(run_supervised(main(), [helper]))
    await asyncio.wait_for(started.wait(), 5)
    supervision.cancel()
    with pytest.raises(asyncio.CancelledError):
        await supervision
    assert ended.is_set()
    helper.cancel()
