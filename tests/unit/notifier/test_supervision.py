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
