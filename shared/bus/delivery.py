"""Turning a Kafka record into a validated event, or a reason to dead-letter it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from shared.events import (
    EnvelopeAttributes,
    Event,
    EventSchemaViolation,
    InvalidEnvelope,
    UnknownEventType,
    decode_event,
)
from shared.events.topics import declared_topic


class Delivery(NamedTuple):
    """A validated event as delivered from one topic partition (a tuple: made for every
    record read, at a third of a frozen dataclass's cost)."""

    envelope: EnvelopeAttributes
    event: Event
    key: bytes | None
    topic: str
    partition: int
    offset: int

    @property
    def traceparent(self) -> str | None:
        return self.envelope.traceparent


@dataclass(frozen=True)
class Tombstone:
    """A null value on a compacted topic: the key's record is erased."""

    key: bytes | None
    topic: str
    partition: int
    offset: int

    #: A tombstone carries no envelope, so no trace (``shared.tracing``).
    traceparent = None


@dataclass(frozen=True)
class Rejected:
    """A record that can never be handled, and why."""

    reason: str


def read_record(
    value: bytes | None, key: bytes | None, topic: str, partition: int, offset: int
) -> Delivery | Tombstone | Rejected:
    """Decode and validate one record; never raises for bad input."""
    if value is None:
        declared = declared_topic(topic)
        if declared is None or declared.takes_tombstones:
            return Tombstone(key, topic, partition, offset)
        # Only a compacted topic erases a key with it: anywhere else it is a record whose
        # event is missing, which no handler would notice.
        return Rejected(f"a record without a value on {declared.name}, which is not compacted")
    try:
        envelope, event = decode_event(value)
    except InvalidEnvelope as exc:
        return Rejected(exc.reason)
    except (UnknownEventType, EventSchemaViolation) as exc:
        return Rejected(str(exc))
    if not belongs_on(event.topic.name, topic):
        return Rejected(f"{envelope.type} does not belong on topic {topic}")
    return Delivery(envelope, event, key, topic, partition, offset)


def belongs_on(declared: str, topic: str) -> bool:
    """An event may be read from its declared topic or a topic derived from it.

    Derived topics are named ``<declared>.<suffix>``: its dead-letter topic, and the
    scratch copies that tests and the bus self-test create so runs never share data.
    """
    return topic == declared or topic.startswith(declared + ".")
