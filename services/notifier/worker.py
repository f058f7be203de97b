"""The notifier worker process: ``python -m services.notifier.worker``.

Runs, in one process: an idempotent consumer per topic group (contacts; replies,
policy versions, incidents and commands; erasure), the scheduler of delayed notices,
the email planner, the inbox-outcome publisher, the email sender and the sweeps (rows
written alongside an erasure, replaced addresses, suppressions past their period).
Every loop keeps its state in PostgreSQL, so several worker processes can run side by
side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

import asyncpg

from services.notifier import handlers, store
from services.notifier.bootstrap import bootstrap
from services.notifier.cards_caught_up import CardsCaughtUp
from services.notifier.config import NotifierSettings
from services.notifier.mailer import SmtpTransport, Transport
from services.notifier.sender import Sender, Wake
from shared.bus import IdempotentConsumer, manual_commit_consumer
from shared.bus.consumer import OUTAGES
from shared.db.listener import Listener
from shared.db.pool import Connection
from shared.process import start_process
from shared.service import Runtime

log = logging.getLogger(__name__)

EMAIL_PLAN_CHUNK = 10_000
SWEEP_EVERY_SECONDS = 60.0
# Periods counted in days: a day late at most, and one scan of the suppressions a day.
SUPPRESSION_SWEEP_EVERY_SECONDS = 86_400.0
Step = Callable[[Connection], Awaitable[int | None]]


async def loop_step(
    name: str,
    pool: asyncpg.Pool,
    step: Step,
    wake: Wake,
    stopping: asyncio.Event,
) -> None:
    """Run ``step`` in a transaction until it finds nothing waiting, then wait for a wake.

    ``step`` returns None when nothing waited. Any number, 0 too, means it took a notice
    (it may have been held back after a failure): the next one may be waiting already.
    """
    while not stopping.is_set():
        try:
            async with pool.acquire() as conn, conn.transaction():
                done = await step(conn)
        except OUTAGES as exc:
            log.warning("%s: outage (%s)", name, type(exc).__name__)
            done = None
            await asyncio.sleep(1.0)
        except Exception:
            log.exception("%s: step failed", name)
            done = None
            await asyncio.sleep(1.0)
        if done is None:
            await wake.wait(1.0)


async def _plan_emails(conn: Connection) -> int | None:
    return await store.plan_email_chunk(conn, EMAIL_PLAN_CHUNK)


def every(seconds: float, step: Callable[[Connection], Awaitable[object]]) -> Step:
    """``step`` at most once every ``seconds`` (a loop_step step that never finds more).
    A run that failed is not counted: the loop's next turn tries again, not a day on."""
    last = [-seconds]

    async def gated(conn: Connection) -> None:
        if time.monotonic() - last[0] >= seconds:
            started = time.monotonic()
            await step(conn)
            last[0] = started

    return gated


async def _sweep_erased(conn: Connection) -> None:
    if swept := await store.sweep_erased(conn):
        log.warning("erased subjects' rows written alongside their erasure, deleted: %s", swept)


async def _forget_lapsed_suppressions(conn: Connection) -> None:
    if gone := await store.forget_lapsed_suppressions(conn):
        log.info("suppressions past their retention period, deleted: %s", gone)


class Worker:
    def __init__(
        self,
        settings: NotifierSettings,
        runtime: Runtime,
        transport_factory: Callable[[], Transport] | None = None,
    ) -> None:
        assert runtime.vault is not None
        assert runtime.producer is not None
        self.settings = settings
        self.runtime = runtime
        self.wake = Wake()
        self.stopping = asyncio.Event()
        self.handlers = handlers.Handlers(
            runtime.vault, timedelta(seconds=settings.notifier_marketing_settle_seconds)
        )
        self.consumers: list[IdempotentConsumer] = []
        self.sender = Sender(
            settings,
            runtime.pool,
            runtime.vault,
            transport_factory or (lambda: SmtpTransport(settings)),
            self.wake,
        )
        self._listener: Listener | None = None
        self.cards = CardsCaughtUp(settings)

    async def _resumed(self, _deaf_seconds: float) -> None:
        self.wake.ring()  # work announced while it could not hear: look now

    def stop(self) -> None:
        self.stopping.set()
        self.sender.stop()
        for consumer in self.consumers:
            consumer.stop()
        self.wake.ring()

    async def run(self) -> None:
        runtime = self.runtime
        assert runtime.producer is not None
        kafka = []
        for name, (topics, handler) in handlers.routes(self.handlers).items():
            consumer = manual_commit_consumer(self.settings, *topics, group_id=name)
            self.consumers.append(
                IdempotentConsumer(name, consumer, runtime.producer, runtime.pool, handler)
            )
            await consumer.start()
            kafka.append(consumer)
        self._listener = Listener(
            self.settings.database_dsn("notifier"),
            store.WORK_CHANNEL,
            lambda _payload: self.wake.ring(),
            self._resumed,
        )
        await self._listener.start()
        pool = runtime.pool
        tasks = [asyncio.create_task(c.run()) for c in self.consumers]
        tasks += [
            asyncio.create_task(self.sender.run()),
            asyncio.create_task(
                loop_step(
                    "scheduler",
                    pool,
                    partial(handlers.fan_out_due, cards=self.cards),
                    self.wake,
                    self.stopping,
                )
            ),
            asyncio.create_task(
                loop_step("email-planner", pool, _plan_emails, self.wake, self.stopping)
            ),
            asyncio.create_task(
                loop_step(
                    "inbox-outcomes", pool, store.queue_inbox_outcomes, self.wake, self.stopping
                )
            ),
            asyncio.create_task(
                loop_step(
                    "erased-sweep",
                    pool,
                    every(SWEEP_EVERY_SECONDS, _sweep_erased),
                    self.wake,
                    self.stopping,
                )
            ),
            asyncio.create_task(
                loop_step(
                    "suppression-periods",
                    pool,
                    every(SUPPRESSION_SWEEP_EVERY_SECONDS, _forget_lapsed_suppressions),
                    self.wake,
                    self.stopping,
                )
            ),
            asyncio.create_task(
                loop_step(
                    "replaced-addresses",
                    pool,
                    store.forget_replaced_addresses,
                    self.wake,
                    self.stopping,
                )
            ),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for consumer in kafka:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await self._listener.close()
            await self.cards.close()


async def run_worker(settings: NotifierSettings) -> None:
    runtime = await bootstrap(settings, with_producer=True, pool_size=20)
    worker = Worker(settings, runtime)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await runtime.close()


def main() -> None:
    settings = NotifierSettings(service_name="notifier-worker")
    start_process(settings.service_name, settings.log_level)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
