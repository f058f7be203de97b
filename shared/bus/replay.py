"""Replaying dead letters: ``python -m shared.bus.replay <topic>.dlq [--dry-run]``.

Once the cause of a dead letter is fixed (a consumer bug, a missing record, an outage
that outlasted the retries), the operator replays the DLQ: every record not replayed
before goes back, byte for byte with its original key and headers, to the topic it came
from. The replayer's own consumer group remembers how far it got, so a replay never
sends a record twice on purpose (consumers would drop a repeat by event id anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.bus.dead_letters import H_REASON, H_SOURCE_TOPIC, original_headers
from shared.bus.kafka_options import client_options, manual_commit_consumer, reliable_producer
from shared.config import PlatformSettings


class NotADeadLetterTopic(ValueError):
    """Only ``<topic>.dlq`` topics can be replayed."""


async def replay_dead_letters(
    settings: PlatformSettings, dlq_topic: str, *, dry_run: bool = False
) -> list[dict[str, str]]:
    """Send every not-yet-replayed dead letter back to its source; return what was sent."""
    if not dlq_topic.endswith(".dlq"):
        raise NotADeadLetterTopic(f"{dlq_topic} is not a dead-letter topic")
    consumer = manual_commit_consumer(settings, group_id=f"{dlq_topic}.replayer")
    producer = reliable_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        await _assign_from_last_replay(settings, consumer, dlq_topic)
        return await _replay_until_caught_up(consumer, producer, dry_run)
    finally:
        await consumer.stop()
        await producer.stop()


async def _replay_until_caught_up(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, dry_run: bool
) -> list[dict[str, str]]:
    ends = await consumer.end_offsets(list(consumer.assignment()))
    replayed: list[dict[str, str]] = []
    while await _behind(consumer, ends):
        batches = await consumer.getmany(timeout_ms=1000)
        for tp, records in batches.items():
            for record in records:
                replayed.append(await _replay_one(producer, record, dry_run))
            if not dry_run:
                await consumer.commit({tp: records[-1].offset + 1})
    return replayed


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def _replay_one(producer: AIOKafkaProducer, record: object, dry_run: bool) -> dict[str, str]:
    headers = list(getattr(record, "headers", ()) or ())
    facts = {k: v.decode(errors="replace") for k, v in headers}
    source = facts.get(H_SOURCE_TOPIC) or getattr(record, "topic", "").removesuffix(".dlq")
    if not dry_run:
        await producer.send_and_wait(
            source,
            value=getattr(record, "value", None),
            key=getattr(record, "key", None),
            headers=original_headers(headers),
        )
    return {"to": source, "offset": str(getattr(record, "offset", "")),
            "reason": facts.get(H_REASON, "")}  # fmt: skip


async def _assign_from_last_replay(
    settings: PlatformSettings, consumer: AIOKafkaConsumer, topic: str
) -> None:
    # Manual assignment: the replayer reads every partition itself, starting where the
    # last replay stopped (its committed offset), or from the beginning.
    partitions = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
    consumer.assign(partitions)
    for tp in partitions:
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


async def _partitions(settings: PlatformSettings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0].get("error_code", 0) != 0:
        raise NotADeadLetterTopic(f"{topic} does not exist")
    return sorted(p["partition"] for p in described[0]["partitions"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.bus.replay")
    parser.add_argument("dlq_topic", help="e.g. accounts.requests.dlq")
    parser.add_argument("--dry-run", action="store_true", help="list, do not send")
    args = parser.parse_args(argv)
    sent = asyncio.run(
        replay_dead_letters(PlatformSettings(), args.dlq_topic, dry_run=args.dry_run)
    )
    for line in sent:
        sys.stdout.write(json.dumps(line) + "\n")
    sys.stderr.write(f"{'would replay' if args.dry_run else 'replayed'} {len(sent)} record(s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
