"""The Kafka bus: reliable producer, transactional outbox and relay, idempotent
consumer, dead letters, and the Faust integration."""

from shared.bus.consumer import ConsumerSettings, IdempotentConsumer, Unprocessable
from shared.bus.delivery import Delivery, Rejected, Tombstone, read_record
from shared.bus.idempotency import mark_processed
from shared.bus.kafka_options import client_options, manual_commit_consumer, reliable_producer
from shared.bus.outbox import add_envelopes, add_event, add_events, add_tombstone, add_tombstones
from shared.bus.relay import OutboxRelay, RelaySettings

__all__ = [
    "ConsumerSettings",
    "Delivery",
    "IdempotentConsumer",
    "OutboxRelay",
    "Rejected",
    "RelaySettings",
    "Tombstone",
    "Unprocessable",
    "add_envelopes",
    "add_event",
    "add_events",
    "add_tombstone",
    "add_tombstones",
    "client_options",
    "manual_commit_consumer",
    "mark_processed",
    "read_record",
    "reliable_producer",
]
