"""The outbox relay process of one service: ``python -m shared.service.relay <database>``.

Each service database has its outbox; this process publishes it. Run one or more per
database (extra ones wait as hot standbys: the relay takes a leader lock).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiokafka import AIOKafkaProducer

from shared.bus.kafka_options import reliable_producer
from shared.bus.relay import OutboxRelay, RelaySettings
from shared.config import PlatformSettings
from shared.databases import SERVICE_DATABASES
from shared.db.pool import service_pool
from shared.db.prepare import migrate_service_database
from shared.process import start_process


async def relay_outbox(settings: PlatformSettings, database: str) -> None:
    pool = await service_pool(settings, database, max_size=1)
    await migrate_service_database(pool, database, None)  # the outbox table must exist
    await pool.close()

    async def started_producer() -> AIOKafkaProducer:
        producer = reliable_producer(settings)
        await producer.start()
        return producer

    relay = OutboxRelay(
        settings.database_dsn(database),
        await started_producer(),
        RelaySettings(idle_poll_seconds=settings.outbox_idle_poll_seconds),
        new_producer=started_producer,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    try:
        await relay.run()
    finally:
        await relay.producer.stop()


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SERVICE_DATABASES:
        sys.exit(f"usage: python -m shared.service.relay {{{','.join(SERVICE_DATABASES)}}}")
    database = sys.argv[1]
    settings = PlatformSettings(service_name=f"{database}-relay")
    start_process(settings.service_name, settings.log_level)
    asyncio.run(relay_outbox(settings, database))


if __name__ == "__main__":
    main()
