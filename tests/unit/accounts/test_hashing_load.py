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


async def test_hashes_beyond_the_threads_are_counted_waiting_then_their_waits_summed() -> None:
    before = LOAD.snapshot()
    release = threading.Event()

    def busy() -> bool:
        return release.wait(10)

    threads = security.HASH_THREADS
    running = [asyncio.create_task(security._off_loop(busy)) for _ in range(threads)]
    await _until(lambda: LOAD.snapshot().started == before.started + threads)
    queued = [asyncio.create_task(security._off_loop(busy)) for _ in range(2)]
    await _until(lambda: LOAD.snapshot().waiting == before.waiting + 2)
    await asyncio.sleep(0.05)  # the queued two wait at least this long
    release.set()
    assert all(await asyncio.gather(*running, *queued))

    after = LOAD.snapshot()
    assert after.waiting == before.waiting
    assert after.started == after.finished == before.started + threads + 2
    assert after.waited_seconds - before.waited_seconds >= 2 * 0.05
    assert after.hashing_seconds - before.hashing_seconds >= threads * 0.05


async def test_a_hash_given_up_before_a_thread_took_it_no_longer_waits() -> None:
    before = LOAD.snapshot()
    release = threading.Event()

    def busy() -> bool:
        return release.wait(10)

    threads = security.HASH_THREADS
    running = [asyncio.create_task(security._off_loop(busy)) for _ in range(threads)]
    await _until(lambda: LOAD.snapshot().started == before.started + threads)
    queued = asyncio.create_task(security._off_loop(busy))
    await _until(lambda: LOAD.snapshot().waiting == before.waiting + 1)
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert LOAD.snapshot().waiting == before.waiting
    release.set()
    await asyncio.gather(*running)
    after = LOAD.snapshot()
    assert (after.waiting, after.started) == (before.waiting, before.started + threads)


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
