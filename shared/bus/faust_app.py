"""Faust, configured the one way the platform runs it, and its envelope codec.

Faust runs at-least-once with one message in flight per agent: faust-streaming's
``concurrency>1`` can commit past an unprocessed message (#606) and its exactly-once
mode has open duplicate bugs (#517, #323), so agents' handlers must be idempotent
(:func:`shared.bus.idempotency.mark_processed` in the effect's transaction).

Agents iterate ``accepted(stream, ...)``: it yields validated :class:`Delivery` (or
:class:`Tombstone`) values and dead-letters every unreadable record, acknowledged by
Kafka before the stream moves past it, so no record is lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import faust
from faust.types import AppT, Message
from faust.worker import Worker

from shared.bus.dead_letters import dead_letter_headers, dead_letter_mark, fitted
from shared.bus.delivery import Delivery, Rejected, Tombstone, read_record
from shared.bus.faust_drain import PlatformFaustApp
from shared.bus.idempotency import mark_processed, was_processed
from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.events.topics import LETTER_MAX_BYTES, Topic
from shared.process import tune_collector
from shared.tracing import trace_id_of, trace_id_var


class EnvelopeSchema(faust.Schema):  # type: ignore[type-arg]
    """Keys stay bytes; values become Delivery, Tombstone or Rejected, never an error.

    A record without a value is judged here too (a tombstone, or bad input where the
    topic is not compacted): a topic must not be declared ``allow_empty``, with which
    Faust hands such a record on as a bare None, past this schema.
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw", allow_empty=False)

    def loads_key(self, app: AppT, message: Message, **_: Any) -> bytes | None:
        return message.key

    def loads_value(self, app: AppT, message: Message, **_: Any) -> Delivery | Tombstone | Rejected:
        return read_record(
            message.value, message.key, message.topic, message.partition, message.offset
        )


def create_faust_app(name: str, settings: PlatformSettings, **overrides: Any) -> faust.App:
    """A Faust app on the platform's Kafka, at-least-once, topics owned by deploy."""
    brokers = ";".join(f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(","))
    options: dict[str, Any] = {
        "broker": brokers,
        "store": "memory://",
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        "producer_max_request_size": LETTER_MAX_BYTES,  # its only sends are dead letters
        "consumer_auto_offset_reset": "earliest",
        "topic_allow_declare": False,  # topics and their settings come from the registry
        "topic_disable_leader": True,
        "broker_commit_interval": 1.0,
        "web_enabled": False,
        "datadir": f"{settings.state_dir}/faust/{name}",
    }
    if settings.kafka_security_protocol == "SSL":  # as every other client (P-10)
        context = client_options(settings)["ssl_context"]
        options["broker_credentials"] = faust.SSLCredentials(context)
    options.update(overrides)
    Path(options["datadir"]).parent.mkdir(parents=True, exist_ok=True)
    return PlatformFaustApp(name, **options)


def run_worker(app: faust.App) -> None:
    """Run a Faust worker for ``app`` until it is stopped (the process's main loop)."""
    # Again now that the app exists: it, its agents and topics live as long as the process.
    tune_collector()
    # Not mode's own logging: it would replace the platform's JSON handler, and with it
    # the filter that keeps personal data out of the logs.
    Worker(app, loglevel="WARNING", quiet=True, override_logging=False).execute_from_commandline()


def envelope_topic(app: faust.App, topic: Topic) -> faust.TopicT:
    """The Faust view of a registry topic, decoded by :class:`EnvelopeSchema`."""
    return app.topic(topic.name, schema=EnvelopeSchema())


async def accepted(
    stream: faust.StreamT,  # type: ignore[type-arg]
    app: faust.App,
    consumer: str,
) -> AsyncIterator[Delivery | Tombstone]:
    """Readable events of a stream, each handled under its trace id (``shared.tracing``);
    unreadable ones go to the DLQ with the reason."""
    async for event in stream.events():
        value = event.value
        if isinstance(value, Rejected):
            await publish_dead_letter(app, event.message, value.reason, consumer)
            continue
        trace_id_var.set(trace_id_of(value.traceparent))
        yield value
        # Set, not reset: an async generator may be closed in another context.
        trace_id_var.set(None)


async def publish_dead_letter(
    app: faust.App, message: Message, reason: str, consumer: str, pool: asyncpg.Pool | None = None
) -> None:
    """Send a Faust message to its DLQ through the app's producer, and wait for the ack.

    With ``pool`` (the consumer's database, with the bus tables), once: marked after the
    acknowledgement, skipped when read again, as the aiokafka consumer does. Faust
    commits offsets about every second, so a worker that crashes or loses the partition
    within it reads the record again. A crash between the ack and the mark still sends
    it twice, never not at all.
    """
    mark = dead_letter_mark(message)
    if pool is not None:
        async with pool.acquire() as conn:
            if await was_processed(conn, consumer, mark):
                return
    raw = message.headers or []
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs]
    value, letter_headers = fitted(
        message.key, message.value, dead_letter_headers(message, headers, reason, consumer)
    )
    await app.producer.send_and_wait(
        f"{message.topic}.dlq", message.key, value, None, None, letter_headers
    )
    if pool is not None:
        async with pool.acquire() as conn:
            await mark_processed(conn, consumer, [mark])
