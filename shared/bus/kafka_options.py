"""Client options every Kafka client of the platform shares (TLS is a setting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.helpers import create_ssl_context

from shared.config import PlatformSettings


def client_options(settings: PlatformSettings) -> dict[str, Any]:
    """Bootstrap servers and, when configured, TLS."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol == "SSL":
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    return options


def reliable_producer(settings: PlatformSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks=all (aiokafka defaults to neither).

    ``linger_ms`` lets ``send()`` batch: callers queue many sends and gather the
    futures instead of awaiting each one.
    """
    options: dict[str, Any] = {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**client_options(settings), **options)


def manual_commit_consumer(
    settings: PlatformSettings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that commits only what the caller says it has durably handled."""
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 1000,
        **group_timeouts_ms(settings),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **client_options(settings), **options)


def group_timeouts_ms(settings: PlatformSettings) -> dict[str, int]:
    """A group member's session timeout and heartbeat interval (a third of it, as Kafka
    advises: two heartbeats may be lost before the member is taken for dead)."""
    session = round(settings.kafka_session_timeout_seconds * 1000)
    return {"session_timeout_ms": session, "heartbeat_interval_ms": session // 3}


def log_reader(settings: PlatformSettings, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer without a group, for reading logs from their start (verifiers, tests).

    Its offset reset is "earliest": aiokafka resets an assigned partition with this
    strategy at once, and a reset to the latest offset still under way when the caller
    seeks to the beginning wins over the seek (the partition then reads as empty).
    """
    options: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    options.update(overrides)
    return AIOKafkaConsumer(**client_options(settings), **options)


async def seek_to_start(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> None:
    """Position each partition at its first offset, by an explicit seek (which, unlike
    ``seek_to_beginning``, no reset already under way can override)."""
    starts = await consumer.beginning_offsets(list(partitions))
    for tp in partitions:
        consumer.seek(tp, starts[tp])
