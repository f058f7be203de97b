"""The deletion worker: ``python -m services.deletion.worker``.

Four loops on one runtime: the lifecycle consumer (DeletionRequested/Cancelled from
accounts), the receipts consumer (SubjectErased from every store), the ticker that
takes every due step, and the snapshot expiry (so a request waiting for its backups to
expire never depends on someone running ``backups expire`` by hand or from cron; it
drops the verifier's scratch copies left behind too).
All progress is in PostgreSQL, so a SIGKILL at any moment loses nothing: the next
worker finds each request where the last commit left it.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg

from services.deletion import backups, handlers, store
from services.deletion.bootstrap import DATABASE, bootstrap, dependencies
from services.deletion.config import SOURCES, DeletionSettings
from services.deletion.handlers import Deps
from shared.bus import IdempotentConsumer, manual_commit_consumer
from shared.bus.consumer import OUTAGES
from shared.bus.faults import crash_point
from shared.db import Connection
from shared.db.listener import Listener
from shared.process import start_process
from shared.service import Runtime
from shared.service.periodic import Periodic
from shared.tracing import working_on

log = logging.getLogger(__name__)
BATCH = 200


class _Round(Periodic):
    """A periodic round over the deletion database, with the worker's dependencies."""

    def __init__(self, pool: asyncpg.Pool, deps: Deps) -> None:
        super().__init__()
        self._pool = pool
        self._deps = deps


class Ticker(_Round):
    """Advances due requests, verifies those whose backups are gone, releases retention."""

    name = "ticker"

    def interval(self) -> float:
        return self._deps.settings.deletion_tick_seconds

    async def round(self) -> bool:
        return await self.tick()

    async def tick(self) -> bool:
        """One round; True if a full batch was due (more may be waiting)."""
        async with self._pool.acquire() as conn, conn.transaction():
            due = await store.claim_due(conn, self._deps.now(), BATCH)
            to_verify = []
            for tracked in due:
                # Its commands, and a failed step's log line, carry the request's trace id.
                with working_on(tracked.trace_id):
                    advanced = await self._advance(conn, tracked)
                if advanced is not None and advanced.verify_due:
                    to_verify.append(advanced)
            await self._release(conn)
        crash_point("deletion.after_tick")
        if to_verify:
            await self._verify(to_verify)
        return len(due) == BATCH

    async def _advance(self, conn: Connection, tracked: store.Tracked) -> store.Tracked | None:
        """The request's due steps in a savepoint; None if one failed.

        asyncpg rolls a failed savepoint back and re-raises: uncaught, one request's
        failure would undo the whole batch, and, coming first again by its due date,
        every tick after it. So the failure stays this request's: its steps are undone,
        it is put back with back-off, and the others go on.
        """
        request_id = tracked.request.request_id
        try:
            async with conn.transaction():
                advanced = await handlers.advance(conn, self._deps, tracked)
                # A verification to run still counts the failures of the ones before it.
                if tracked.step_failures and not advanced.verify_due:
                    await store.step_succeeded(conn, request_id)
        except OUTAGES:
            raise  # the database or Kafka, not the request: the round is retried whole
        except Exception as exc:
            due = await handlers.defer_failed_step(conn, self._deps, tracked)
            # Ids and the error's type only: a message may quote stored values.
            log.error(
                "ticker: request %s failed in %s (%s, %d in a row); next try at %s",
                request_id,
                tracked.request.stage,
                type(exc).__name__,
                tracked.step_failures + 1,
                due.isoformat(),
            )
            return None
        return advanced

    async def _release(self, conn: Connection) -> None:
        """Retention releases in their own savepoint: one that fails undoes no request's
        step of this tick (it is tried again at the next)."""
        try:
            async with conn.transaction():
                await handlers.release_retained(conn, self._deps)
        except OUTAGES:
            raise
        except Exception as exc:
            log.error(
                "ticker: retention releases failed (%s); retried next tick", type(exc).__name__
            )

    async def _verify(self, batch: list[store.Tracked]) -> None:
        assert self._deps.verify is not None
        try:
            verdicts = await self._deps.verify(batch)
        except OUTAGES:
            raise  # the database or Kafka: the lease runs out and it is verified again
        except Exception as exc:
            # Uncaught, it would be verified again at every lease, for ever, unseen.
            await self._verification_failed(batch, type(exc).__name__)
            return
        for tracked in batch:
            async with self._pool.acquire() as conn, conn.transaction():
                current = await store.get(conn, tracked.request.request_id, lock=True)
                if current is None or current.request.stage != "backups_pending":
                    continue
                verdict = verdicts[tracked.request.request_id]
                with working_on(current.trace_id):
                    await handlers.complete(conn, self._deps, current, verdict)
                if current.step_failures:
                    await store.step_succeeded(conn, current.request.request_id)
                crash_point("deletion.backups_pending.before_commit")

    async def _verification_failed(self, batch: list[store.Tracked], error: str) -> None:
        """Each request of the batch put back with back-off, escalated once it failed
        :data:`handlers.VERIFY_FAILURES_ESCALATED` times in a row."""
        for tracked in batch:
            async with self._pool.acquire() as conn, conn.transaction():
                current = await store.get(conn, tracked.request.request_id, lock=True)
                if current is None or current.request.stage != "backups_pending":
                    continue
                with working_on(current.trace_id):
                    due = await handlers.verification_failed(conn, self._deps, current, error)
                    # The error's type only: a pg_restore's message may quote a dump's rows.
                    log.error(
                        "ticker: verification of request %s failed (%s, %d in a row); %s",
                        current.request.request_id,
                        error,
                        current.step_failures + 1,
                        "escalated" if due is None else f"next try at {due.isoformat()}",
                    )


class SnapshotExpiry(_Round):
    """Removes snapshots past their expiry every ``deletion_backup_expire_seconds``, and
    the verifier's scratch copies left behind: one whose verification was killed after
    the last verification began would otherwise stay until a request is verified again,
    if ever."""

    name = "snapshot expiry"

    def interval(self) -> float:
        return self._deps.settings.deletion_backup_expire_seconds

    async def round(self) -> bool:
        settings = self._deps.settings
        removed = await backups.expire_due(self._pool, settings.backup_dir(), self._deps.now())
        if removed:
            log.info("expired snapshots %s", ", ".join(removed))
        await backups.drop_stale_scratch(settings)
        return False


class Worker:
    """The worker's loops on one runtime; ``run`` until ``stop``."""

    def __init__(self, settings: DeletionSettings, runtime: Runtime, deps: Deps) -> None:
        assert runtime.producer is not None
        self._runtime = runtime
        handle = handlers.route(deps)
        self._kafka = {
            name: manual_commit_consumer(
                settings, settings.topic(topic), group_id=settings.group(name)
            )
            for name, topic in SOURCES.items()
        }
        self._consumers = [
            IdempotentConsumer(name, client, runtime.producer, runtime.pool, handle)
            for name, client in self._kafka.items()
        ]
        self.ticker = Ticker(runtime.pool, deps)
        self.expiry = SnapshotExpiry(runtime.pool, deps)
        # A confirmation or a store's receipt makes a step due at once: heard here, it is
        # taken now, not at the ticker's next round (any worker's ticker may take it).
        self._due = Listener(
            settings.database_dsn(DATABASE),
            store.TICKER_CHANNEL,
            lambda _payload: self.ticker.wake(),
            self._resumed,
        )

    def stop(self) -> None:
        self.ticker.stop()
        self.expiry.stop()
        for consumer in self._consumers:
            consumer.stop()

    async def _resumed(self, _deaf_seconds: float) -> None:
        self.ticker.wake()  # what was announced meanwhile is due already

    async def run(self) -> None:
        try:
            for client in self._kafka.values():
                await client.start()
            await self._due.start()
            await asyncio.gather(
                self.ticker.run(), self.expiry.run(), *(c.run() for c in self._consumers)
            )
        finally:
            await self._due.close()
            for client in self._kafka.values():
                await client.stop()


async def run_worker(settings: DeletionSettings) -> None:
    runtime = await bootstrap(settings, with_producer=True)
    worker = Worker(settings, runtime, dependencies(settings, runtime))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await runtime.close()


def main() -> None:
    settings = DeletionSettings()
    start_process(settings.service_name, settings.log_level)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
