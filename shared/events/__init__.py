"""Events on the bus: the envelope, the registry of event types, and the topics."""

from shared.events.envelope import (
    Envelope,
    EnvelopeAttributes,
    InvalidEnvelope,
    decode_envelope,
    encode_envelope,
)
from shared.events.registry import (
    EnvelopeWriter,
    Event,
    EventSchemaViolation,
    UnknownEventType,
    decode_event,
    envelope_for,
    event_class,
    parse_event,
    register_event,
    registered_events,
)
from shared.events.topics import Topic, all_topics, dlq_of

__all__ = [
    "Envelope",
    "EnvelopeAttributes",
    "EnvelopeWriter",
    "Event",
    "EventSchemaViolation",
    "InvalidEnvelope",
    "Topic",
    "UnknownEventType",
    "all_topics",
    "decode_envelope",
    "decode_event",
    "dlq_of",
    "encode_envelope",
    "envelope_for",
    "event_class",
    "parse_event",
    "register_event",
    "registered_events",
]
