"""Creating the registry's topics on any Kafka: ``python -m shared.bus.topic_admin``.

The local stack calls :func:`ensure_topics` after Kafka starts; a deployment runs the
module once (a Kubernetes Job, the compose ``topics`` container) with its own
``IMT_KAFKA_BOOTSTRAP`` and replication factor.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.events.topics import Topic, all_topics

TOPIC_ALREADY_EXISTS = 36


class TopicCreationFailed(RuntimeError):
    """The broker refused to create a topic."""


async def ensure_topics(
    settings: PlatformSettings, topics: Iterable[Topic] = (), replication_factor: int = 1
) -> list[str]:
    """Create missing topics; never touch existing ones' partitions or config.

    Returns the names created now. A topic with fewer partitions than the registry says
    is refused, not grown: its keys would move to other partitions, so a user's newer
    events could be read before older ones, and a contact card's tombstone would land
    where compaction never meets the card. Growing one is a planned migration.
    """
    wanted = list(topics) or list(all_topics())
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        t.name,
                        t.partitions,
                        replication_factor,
                        topic_configs=t.config(replication_factor),
                    )
                    for t in missing
                ]
            )
            _raise_errors(response.topic_errors)
        short = [
            f"{t.name} has {existing[t.name]} partition(s), the registry {t.partitions}"
            for t in wanted
            if t.name in existing and existing[t.name] < t.partitions
        ]
        if short:
            raise TopicCreationFailed(
                "not grown (keys would change partition; migrate them as planned work): "
                + "; ".join(short)
            )
        present = [t for t in wanted if t.name in existing]
        await _check_min_insync(admin, present, replication_factor)
        return [t.name for t in missing]
    finally:
        await admin.close()


MIN_INSYNC = "min.insync.replicas"


async def _check_min_insync(
    admin: AIOKafkaAdminClient, topics: Sequence[Topic], replication_factor: int
) -> None:
    """Existing topics must wait for as many copies as the registry's would: with fewer,
    acks=all is satisfied by a leader alone, whose lost disk loses the event. Reported,
    not altered (an alter replaces a topic's whole configuration)."""
    if not topics:
        return
    wanted = {t.name: int(t.config(replication_factor)[MIN_INSYNC]) for t in topics}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, t.name, {MIN_INSYNC: None}) for t in topics
    ]
    low = []
    for response in await admin.describe_configs(resources):
        for _code, _message, _type, name, entries in response.resources:
            values = [int(e[1]) for e in entries if e[0] == MIN_INSYNC and e[1] is not None]
            if values and values[0] < wanted.get(name, 1):
                low.append(f"{name} has {MIN_INSYNC}={values[0]}, the registry {wanted[name]}")
    if low:
        raise TopicCreationFailed(
            f"acks=all would not wait for {replication_factor - 1} copies: raise it"
            " (kafka-configs.sh --alter --add-config): " + "; ".join(sorted(low))
        )


def _raise_errors(errors: Sequence[tuple[Any, ...]]) -> None:
    # TOPIC_ALREADY_EXISTS: another process won the race, which is fine.
    failed = [f"{e[0]}: code {e[1]}" for e in errors if e[1] not in (0, TOPIC_ALREADY_EXISTS)]
    if failed:
        raise TopicCreationFailed("Kafka topic creation failed: " + "; ".join(failed))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.bus.topic_admin")
    parser.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args()
    created = asyncio.run(ensure_topics(PlatformSettings(), (), args.replication_factor))
    print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")  # noqa: T201


if __name__ == "__main__":
    main()
