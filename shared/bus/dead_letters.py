"""Dead-lettering: a record that cannot be handled goes to ``<topic>.dlq`` with why.

The original key, bytes and headers are kept unchanged so an operator can replay the
record once the cause is fixed; the reason never quotes the record's content. A record
whose letter would still not fit its DLQ (a topic whose limit was raised above Kafka's
default, see ``topics.LETTER_MAX_BYTES``) is dead-lettered without its value, marked so:
the letter still says where the record is, and why, and the replay skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID, uuid5

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events.topics import LETTER_MAX_BYTES, dlq_of
from shared.observability.logs import scrub

H_REASON = "dlq_reason"
H_SOURCE_TOPIC = "dlq_source_topic"
H_SOURCE_PARTITION = "dlq_source_partition"
H_SOURCE_OFFSET = "dlq_source_offset"
H_CONSUMER = "dlq_consumer"
H_TIME = "dlq_time"
H_VALUE_OMITTED = "dlq_value_omitted"  # the value's length in bytes, when it was left out
_OWN = {
    H_REASON, H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_CONSUMER, H_TIME,
    H_VALUE_OMITTED,
}  # fmt: skip


def letter_producer(settings: PlatformSettings) -> AIOKafkaProducer:
    """A reliable producer that can send the largest dead letter (aiokafka refuses a
    record of more than 1 MiB by default: the letter of a record near it, endlessly)."""
    return reliable_producer(settings, max_request_size=LETTER_MAX_BYTES)


class SourceRecord(Protocol):
    """What a dead letter keeps of the record it replaces (aiokafka and Faust agree)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class StampedRecord(SourceRecord, Protocol):
    """A source record with the time Kafka gave it."""

    @property
    def timestamp(self) -> float: ...


_LETTERS = UUID("6f1d6e8e-3c1b-4c55-9a57-2f0b1f6f9d10")  # namespace of dead-letter marks


def dead_letter_mark(record: StampedRecord) -> UUID:
    """The id a consumer marks once it has dead-lettered this record, so that reading it
    again (after an outage or a crash before the offset commit) sends no second letter.
    The record's timestamp is part of it: a topic deleted and created again under the
    same name starts its offsets over."""
    return uuid5(_LETTERS, f"{record.topic}/{record.partition}/{record.offset}/{record.timestamp}")


def dead_letter_headers(
    record: SourceRecord, headers: Sequence[tuple[str, bytes]], reason: str, consumer: str
) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the dead-letter facts.

    The reason is scrubbed here, where every writer of dead letters passes: it is often
    an error's text, which may quote the record (pydantic's input_value, asyncpg's
    "invalid input for query argument $1: '...'"), and the header is kept for weeks.
    """
    kept = [(k, v) for k, v in headers if k not in _OWN]
    return [
        *kept,
        (H_REASON, scrub(reason).encode()[:2000]),
        (H_SOURCE_TOPIC, record.topic.encode()),
        (H_SOURCE_PARTITION, str(record.partition).encode()),
        (H_SOURCE_OFFSET, str(record.offset).encode()),
        (H_CONSUMER, consumer.encode()),
        (H_TIME, datetime.now(UTC).isoformat().encode()),
    ]


def fitted(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The letter's value and headers: the value left out (and said so) if the whole
    would not fit a DLQ. Checked here, not left to the producer's refusal: an error from
    it would be taken for an outage and the letter tried again, for good."""
    if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) <= LETTER_MAX_BYTES:
        return value, headers
    return None, [*headers, (H_VALUE_OMITTED, str(len(value or b"")).encode())]


async def dead_letter(
    producer: AIOKafkaProducer,
    record: SourceRecord,
    headers: Sequence[tuple[str, bytes]],
    reason: str,
    consumer: str,
) -> None:
    """Publish the record to its DLQ and wait for the acknowledgement."""
    value, letter_headers = fitted(
        record.key, record.value, dead_letter_headers(record, headers, reason, consumer)
    )
    await producer.send_and_wait(
        dlq_of(record.topic), value=value, key=record.key, headers=letter_headers
    )


def original_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A dead letter's headers without the dead-letter facts (for replay)."""
    return [(k, v) for k, v in headers if k not in _OWN]
