"""Answers erase commands: ``python -m services.analytics.eraser``.

Reads deletion.commands with the idempotent consumer and answers each EraseSubject
with a SubjectErased receipt (store "analytics") through the outbox, in the same
transaction that marks the command processed.
"""

from __future__ import annotations

import asyncio
import signal

from services.analytics import handlers
from services.analytics.bootstrap import bootstrap
from services.analytics.config import ERASER_GROUP, AnalyticsSettings
from shared.bus import IdempotentConsumer, manual_commit_consumer
from shared.events.topics import DELETION_COMMANDS
from shared.process import start_process

CONSUMER = ERASER_GROUP


async def run(settings: AnalyticsSettings) -> None:
    runtime = await bootstrap(settings, with_producer=True)
    assert runtime.producer is not None
    consumer = manual_commit_consumer(settings, DELETION_COMMANDS.name, group_id=CONSUMER)
    idempotent = IdempotentConsumer(
        CONSUMER, consumer, runtime.producer, runtime.pool, handlers.erase
    )
    await consumer.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, idempotent.stop)
    try:
        await idempotent.run()
    finally:
        await consumer.stop()
        await runtime.close()


def main() -> None:
    settings = AnalyticsSettings(service_name="analytics-eraser")
    start_process(settings.service_name, settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
