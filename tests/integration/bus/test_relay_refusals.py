"""A row Kafka refuses for good is set aside with the reason; the relay goes on."""

import asyncpg
from aiokafka.errors import MessageSizeTooLargeError

from shared.bus import OutboxRelay, reliable_producer
from shared.bus.selftest import probe_envelopes, queue_probes
from shared.config import PlatformSettings
from shared.events import encode_envelope
from shared.observability import Metrics
from tests.support.probes import read_all

TOO_LARGE = b"x" * (2 * 1024 * 1024)  # over the producer's 1 MiB max_request_size


async def test_a_row_kafka_refuses_for_good_is_set_aside_and_the_rows_behind_it_go(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    await conn.execute(
        "INSERT INTO bus_outbox (topic, key, value) VALUES ($1, 'k', $2)", scratch_topic, TOO_LARGE
    )
    after = probe_envelopes(["k"], [1])
    await queue_probes(conn, scratch_topic, after)
    producer = reliable_producer(settings)
    await producer.start()
    try:
        relay = OutboxRelay(scratch_dsn, producer)
        assert await relay.publish_batch(conn) == 2  # both handled in one batch
    finally:
        await producer.stop()

    assert await conn.fetchval("SELECT count(*) FROM bus_outbox") == 0
    rejected = await conn.fetch("SELECT topic, value, reason FROM bus_outbox_rejected")
    assert [(r["topic"], r["value"]) for r in rejected] == [(scratch_topic, TOO_LARGE)]
    assert MessageSizeTooLargeError.__name__ in rejected[0]["reason"]
    published = await read_all(settings, scratch_topic, expected=1)
    assert [r.value for r in published] == [encode_envelope(after[0])]  # type: ignore[attr-defined]
    assert relay.published == 1

    metrics = Metrics("probe")
    await metrics.refresh_outbox(conn)
    assert metrics.outbox_rejected._value.get() == 1  # what pages the operator
