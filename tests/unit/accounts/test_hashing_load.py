from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from services.accounts import security
from services.accounts.hashing_load import HashingLoad, HashingLoadCollector

LOAD = security.HASHING_LOAD


async def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


class BusyPool:
    """Every hashing thread held by a task that waits for ``release``."""

    def __init__(self) -> None:
        self.before = LOAD.snapshot()
        self.release = threading.Event()
        self.running: list[asyncio.Task[bool]] = []

    def busy(self) -> bool:
        return self.release.wait(10)

    async def fill(self) -> None:
        threads = security.HASH_THREADS
        self.running = [asyncio.create_task(security._off_loop(self.busy)) for _ in range(threads)]
        await _until(lambda: LOAD.snapshot().started == self.before.started + threads)

    async def queue(self, count: int) -> list[asyncio.Task[bool]]:
        queued = [asyncio.create_task(security._off_loop(self.busy)) for _ in range(count)]
        await _until(lambda: LOAD.snapshot().waiting == self.before.waiting + count)
        return queued


async def test_hashes_beyond_the_threads_are_counted_waiting_then_their_waits_summed() -> None:
    pool = BusyPool()
    await pool.fill()
    queued = await pool.queue(2)
    await asyncio.sleep(0.05)  # the queued two wait at least this long
    pool.release.set()
    assert all(await asyncio.gather(*pool.running, *queued))

    before, after, threads = pool.before, LOAD.snapshot(), security.HASH_THREADS
    assert after.waiting == before.waiting
    assert after.started == after.finished == before.started + threads + 2
    assert after.waited_seconds - before.waited_seconds >= 2 * 0.05
    assert after.hashing_seconds - before.hashing_seconds >= threads * 0.05


async def test_a_hash_given_up_before_a_thread_took_it_no_longer_waits() -> None:
    pool = BusyPool()
    await pool.fill()
    [queued] = await pool.queue(1)
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert LOAD.snapshot().waiting == pool.before.waiting
    pool.release.set()
    await asyncio.gather(*pool.running)
    after = LOAD.snapshot()
    assert (after.waiting, after.started) == (
        pool.before.waiting, pool.before.started + security.HASH_THREADS,
    )  # fmt: skip


def test_the_load_is_exported_as_a_gauge_and_two_summaries() -> None:
    load = HashingLoad()
    done, waiting = load.submit(), load.submit()
    load.start(done)
    load.finish(done)
    load.withdraw(done)  # after the start: changes nothing
    registry = CollectorRegistry()
    registry.register(HashingLoadCollector(load))
    text = generate_latest(registry).decode()
    assert "password_hashes_waiting 1.0" in text
    assert "password_hash_wait_seconds_count 1.0" in text
    assert "password_hash_seconds_count 1.0" in text
    assert "password_hash_wait_seconds_sum" in text
    assert "password_hash_seconds_sum" in text
    load.withdraw(waiting)
    assert load.snapshot().waiting == 0
