"""The bus's self-test: probe events through outbox, relay, Kafka and a consumer.

Used by the integration tests (including the SIGKILL test, which runs the relay and the
consumer as processes of this module), by the benchmarks, and by operators who want to
prove a deployment's bus end to end:

    python -m shared.bus.selftest relay   --dsn DSN
    python -m shared.bus.selftest consume --dsn DSN --topic T --group G
    python -m shared.bus.selftest faust   --dsn DSN --topic T --group G
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from shared.bus.consumer import IdempotentConsumer, Item
from shared.bus.dead_letters import letter_producer
from shared.bus.delivery import Delivery
from shared.bus.idempotency import mark_processed
from shared.bus.kafka_options import manual_commit_consumer, reliable_producer
from shared.bus.outbox import add_envelopes
from shared.bus.relay import OutboxRelay
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.events import Envelope, envelope_for
from shared.events.catalogue.selftest import ProbeRecorded

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS probe_effects (
    applied  bigserial PRIMARY KEY,   -- order in which effects were applied
    event_id uuid NOT NULL,           -- deliberately not unique: duplicates must show
    key      text NOT NULL,
    seq      bigint NOT NULL
)
"""


def probe_envelopes(keys: Sequence[str], seqs: Sequence[int]) -> list[Envelope]:
    return [
        envelope_for(ProbeRecorded(key=k, seq=s), source="bus-selftest", subject=k)
        for k, s in zip(keys, seqs, strict=True)
    ]


async def queue_probes(conn: Connection, topic: str, envelopes: list[Envelope]) -> None:
    """Write probes to the outbox in one transaction."""
    async with conn.transaction():
        await add_envelopes(conn, topic, envelopes)


async def record_probe_effects(conn: Connection, items: Sequence[Item]) -> None:
    """The effect of probes: one row each, written with COPY (the bulk path)."""
    rows = [
        (i.envelope.id, i.event.key, i.event.seq)
        for i in items
        if isinstance(i, Delivery) and isinstance(i.event, ProbeRecorded)
    ]
    await conn.copy_records_to_table(
        "probe_effects", records=rows, columns=["event_id", "key", "seq"]
    )


async def apply_probes_once(conn: Connection, consumer: str, items: Sequence[Delivery]) -> int:
    """Idempotent effect for consumers without the batch machinery (Faust agents)."""
    async with conn.transaction():
        fresh: set[UUID] = await mark_processed(conn, consumer, [d.envelope.id for d in items])
        await record_probe_effects(conn, [d for d in items if d.envelope.id in fresh])
    return len(fresh)


async def run_relay(settings: PlatformSettings, dsn: str) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    relay = OutboxRelay(dsn, producer)
    _stop_on_signals(relay.stop)
    try:
        await relay.run()
    finally:
        await producer.stop()


async def run_consumer(settings: PlatformSettings, dsn: str, topic: str, group: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    producer = letter_producer(settings)
    consumer = manual_commit_consumer(settings, topic, group_id=group)
    idempotent = IdempotentConsumer(group, consumer, producer, pool, record_probe_effects)
    await producer.start()
    await consumer.start()
    _stop_on_signals(idempotent.stop)
    try:
        await idempotent.run()
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


def _stop_on_signals(stop: object) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.bus.selftest")
    parser.add_argument("role", choices=["relay", "consume", "faust"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--topic")
    parser.add_argument("--group")
    parser.add_argument(
        "--stream-buffer", type=int, help="faust: the agent's stream buffer (Faust's default)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = PlatformSettings()
    if args.role == "relay":
        asyncio.run(run_relay(settings, args.dsn))
    elif args.role == "consume":
        asyncio.run(run_consumer(settings, args.dsn, args.topic, args.group))
    else:
        from shared.bus.selftest_faust import run_faust_worker

        overrides = {"stream_buffer_maxsize": args.stream_buffer} if args.stream_buffer else {}
        run_faust_worker(settings, args.dsn, args.topic, args.group, **overrides)


if __name__ == "__main__":
    main()
