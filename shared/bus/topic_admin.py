"""Creating the registry's topics on any Kafka, and keeping their settings the registry's:
``python -m shared.bus.topic_admin``.

The local stack calls :func:`ensure_topics` after Kafka starts; a deployment runs the
module once (a Kubernetes Job, the compose ``topics`` container) with its own
``IMT_KAFKA_BOOTSTRAP`` and replication factor.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.events.topics import PRIMARY_TOPICS, Topic, all_topics

TOPIC_ALREADY_EXISTS = 36


class TopicCreationFailed(RuntimeError):
    """The broker refused to create a topic."""


class TopicReport(NamedTuple):
    """What :func:`ensure_topics` changed: topics created, and topics whose settings it
    brought back to the registry's."""

    created: list[str]
    reconciled: list[str]


async def ensure_topics(
    settings: PlatformSettings, topics: Iterable[Topic] = (), replication_factor: int = 1
) -> TopicReport:
    """Create missing topics and bring existing ones' settings to the registry's.

    The registry is what the platform promises (how long a topic keeps records, whether
    a tombstoned card leaves the log): a topic created under an older registry, or
    edited by hand, is altered back at the next start rather than left keeping records
    for longer than the docs say. Settings the registry does not manage are kept.

    A topic with fewer partitions than the registry says is refused, not grown: its keys
    would move to other partitions, so a user's newer events could be read before older
    ones, and a contact card's tombstone would land where compaction never meets the
    card. Growing one is a planned migration.
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
        reconciled = await _reconcile(admin, present, replication_factor)
        return TopicReport([t.name for t in missing], reconciled)
    finally:
        await admin.close()


MIN_INSYNC = "min.insync.replicas"
# Where a describe says a value comes from: set on the topic itself (not a broker default).
DYNAMIC_TOPIC_CONFIG = 1
# Every setting the registry decides, for some topic: one it no longer asks for (a topic
# no longer compacted, say) is removed from the topic rather than left behind. Not a
# DLQ's record size: that of the other topics stays an operator's to tune (a letter too
# large for its DLQ then leaves its value out: shared.bus.dead_letters.fitted).
MANAGED = frozenset(
    key
    for topic in (*PRIMARY_TOPICS, Topic("-", "-", compacted=True), Topic("-", "-"))
    for key in topic.config()
)


def reconciled_config(wanted: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """The topic-level settings a topic should carry: the registry's, and the topic's own
    that the registry does not manage (an operator's tuning). A stricter
    ``min.insync.replicas`` set by hand is kept: lowering it would weaken acks=all."""
    config = {k: v for k, v in current.items() if k not in MANAGED and k not in wanted}
    config.update(wanted)
    if int(current.get(MIN_INSYNC, 0)) > int(wanted.get(MIN_INSYNC, 1)):
        config[MIN_INSYNC] = current[MIN_INSYNC]
    return config


async def _reconcile(
    admin: AIOKafkaAdminClient, topics: Sequence[Topic], replication_factor: int
) -> list[str]:
    """Alter the topics whose own settings differ from :func:`reconciled_config`; return
    their names. The legacy AlterConfigs (all aiokafka offers) replaces a topic's whole
    set of settings, so the whole reconciled set is sent, read just before."""
    if not topics:
        return []
    by_name = {t.name: t for t in topics}
    changes: dict[str, dict[str, str]] = {}
    for name, current in (await _own_settings(admin, by_name)).items():
        config = reconciled_config(by_name[name].config(replication_factor), current)
        if config != current:
            changes[name] = config
    if changes:
        altered = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, c) for n, c in changes.items()]
        )
        failed = [
            f"{name}: {message or code}"
            for response in altered
            for code, message, _type, name in response.resources
            if code
        ]
        if failed:
            raise TopicCreationFailed("Kafka refused the registry's settings: " + "; ".join(failed))
        await _in_effect(admin, changes)
    return sorted(changes)


async def _own_settings(
    admin: AIOKafkaAdminClient, names: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Each topic's own settings (not the broker's defaults), as a describe reads them."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    found: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for code, message, _type, name, entries in response.resources:
            if code:
                raise TopicCreationFailed(f"describing {name}'s settings failed: {message}")
            found[name] = {e[0]: e[1] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG}
    return found


async def _in_effect(
    admin: AIOKafkaAdminClient, changes: Mapping[str, Mapping[str, str]], seconds: float = 10.0
) -> None:
    """Wait until a describe reads the altered settings. The broker answers an alter once
    the controller accepted it and applies it a moment later (KRaft), so a describe (the
    next start's, an operator's, a test's) could still read the old ones, and an alter
    based on that read would undo one made meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pending = dict(changes)
    while True:
        read = await _own_settings(admin, pending)
        pending = {name: config for name, config in pending.items() if read[name] != config}
        if not pending:
            return
        if loop.time() > deadline:
            late = ", ".join(sorted(pending))
            raise TopicCreationFailed(
                f"settings altered, not in effect after {seconds:.0f}s: {late}"
            )
        await asyncio.sleep(0.05)


def _raise_errors(errors: Sequence[tuple[Any, ...]]) -> None:
    # TOPIC_ALREADY_EXISTS: another process won the race, which is fine.
    failed = [f"{e[0]}: code {e[1]}" for e in errors if e[1] not in (0, TOPIC_ALREADY_EXISTS)]
    if failed:
        raise TopicCreationFailed("Kafka topic creation failed: " + "; ".join(failed))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.bus.topic_admin")
    parser.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args()
    report = asyncio.run(ensure_topics(PlatformSettings(), (), args.replication_factor))
    for verb, names in (("created", report.created), ("reconciled", report.reconciled)):
        print(f"{verb} {len(names)} topic(s): {', '.join(names) or '-'}")  # noqa: T201


if __name__ == "__main__":
    main()
