"""Replaying dead letters: ``python -m shared.bus.replay <topic>.dlq [--dry-run]``.

Once the cause of a dead letter is fixed (a consumer bug, a missing record, an outage
that outlasted the retries), the operator replays the DLQ: every record not replayed
before goes back, byte for byte with its original key and headers, to the topic it came
from. The replayer's own consumer group remembers how far it got, so a replay never
sends a record twice on purpose (consumers would drop a repeat by event id anyway).

A compacted topic (``accounts.contacts``) keeps the latest record of each key for ever,
and a replayed record becomes that latest record. So a dead letter of a compacted topic
goes back only while its key's latest record there is still the very record it holds
(the same bytes). One superseded since is skipped, and listed with why:

* tombstoned since (a contact card of an account erased meanwhile): replayed, the card
  would come back after the tombstone, as the card of record, for good;
* gone altogether (tombstoned, then compacted away after ``delete.retention.ms``): the
  same;
* followed by a newer record: the replayed, older one would replace it as the latest.

The newest record's consumers have read it already; that one, if it was dead-lettered
too, is still replayed, being the latest. The check reads the source partitions from
their start once per replay (a compacted topic holds about one record per key); a
tombstone written during the few moments between that read and the send is not seen.
Consumers must still refuse a record of an erased subject themselves (the notifier
does: ``services.notifier.handlers``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.bus.dead_letters import (
    H_REASON,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_VALUE_OMITTED,
    original_headers,
)
from shared.bus.kafka_options import (
    client_options,
    log_reader,
    manual_commit_consumer,
    reliable_producer,
    seek_to_start,
)
from shared.config import PlatformSettings


class NotADeadLetterTopic(ValueError):
    """Only ``<topic>.dlq`` topics can be replayed."""


class SourceUnknown(RuntimeError):
    """The topic dead letters go back to cannot be described: whether it is compacted
    (and a dead letter superseded there) is unknown, so nothing is replayed."""


async def replay_dead_letters(
    settings: PlatformSettings, dlq_topic: str, *, dry_run: bool = False
) -> list[dict[str, str]]:
    """Send every not-yet-replayed dead letter back to its source; return one line for
    each: where it went, or (``skipped``) why it did not (a compacted topic's record
    superseded since: see the module's docstring). A skipped one is done with too: the
    next replay does not look at it again."""
    if not dlq_topic.endswith(".dlq"):
        raise NotADeadLetterTopic(f"{dlq_topic} is not a dead-letter topic")
    consumer = manual_commit_consumer(settings, group_id=f"{dlq_topic}.replayer")
    producer = reliable_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        await _assign_from_last_replay(settings, consumer, dlq_topic)
        batches = await _read_until_caught_up(consumer)
        letters = [record for _, records in batches for record in records]
        superseded = await _superseded(settings, letters)
        replayed: list[dict[str, str]] = []
        for tp, records in batches:
            for record in records:
                why = _omitted(record) or superseded.get(_place(record))
                replayed.append(await _replay_one(producer, record, dry_run, skip=why))
            if not dry_run:
                await consumer.commit({tp: records[-1].offset + 1})
        return replayed
    finally:
        await consumer.stop()
        await producer.stop()


async def _read_until_caught_up(consumer: AIOKafkaConsumer) -> list[tuple[TopicPartition, Any]]:
    """The dead letters not replayed yet (up to the end when this began), in batches."""
    ends = await consumer.end_offsets(list(consumer.assignment()))
    batches: list[tuple[TopicPartition, Any]] = []
    while await _behind(consumer, ends):
        for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
            records = [r for r in records if r.offset < ends[tp]]
            if records:
                batches.append((tp, records))
    return batches


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def _facts(record: object) -> dict[str, str]:
    headers = list(getattr(record, "headers", ()) or ())
    return {k: v.decode(errors="replace") for k, v in headers}


def _source_of(record: object) -> str:
    return _facts(record).get(H_SOURCE_TOPIC) or getattr(record, "topic", "").removesuffix(".dlq")


def _omitted(record: object) -> str | None:
    """Why a letter that left its value out (too large for its DLQ) cannot go back:
    sent, it would be a record with no value (on a compacted topic, a tombstone)."""
    facts = _facts(record)
    if H_VALUE_OMITTED not in facts:
        return None
    where = (f"{_source_of(record)}[{facts.get(H_SOURCE_PARTITION, '?')}]"
             f"@{facts.get(H_SOURCE_OFFSET, '?')}")  # fmt: skip
    return (
        f"its value ({facts[H_VALUE_OMITTED]} bytes) was too large for the DLQ:"
        f" read it at {where} while that topic keeps it"
    )


def _place(record: object) -> tuple[int, int]:
    """A dead letter's own place (partition, offset) in its DLQ."""
    return getattr(record, "partition", 0), getattr(record, "offset", -1)


async def _replay_one(
    producer: AIOKafkaProducer, record: object, dry_run: bool, skip: str | None = None
) -> dict[str, str]:
    headers = list(getattr(record, "headers", ()) or ())
    source = _source_of(record)
    if not dry_run and skip is None:
        await producer.send_and_wait(
            source,
            value=getattr(record, "value", None),
            key=getattr(record, "key", None),
            headers=original_headers(headers),
        )
    line = {"to": source, "offset": str(getattr(record, "offset", "")),
            "reason": _facts(record).get(H_REASON, "")}  # fmt: skip
    if skip is not None:
        line["skipped"] = skip
    return line


# -- compacted topics: a dead letter goes back only while it is its key's latest record --


async def _superseded(
    settings: PlatformSettings, letters: Sequence[Any]
) -> dict[tuple[int, int], str]:
    """The dead letters (by their place in the DLQ) of a compacted topic whose key's
    latest record there is no longer the one they hold, with why. A dead-lettered
    tombstone always goes back: it can only erase, and its consumer's erasure is owed."""
    by_source: dict[str, list[Any]] = {}
    for letter in letters:
        if letter.key is not None:  # a compacted topic takes none without a key
            by_source.setdefault(_source_of(letter), []).append(letter)
    compacted = await _compacted(settings, by_source)
    skipped: dict[tuple[int, int], str] = {}
    for source in compacted:
        mine = by_source[source]
        latest = await _latest_records(settings, source, mine)
        for letter in mine:
            if letter.value is None:
                continue  # a tombstone only erases: never held back
            if letter.key not in latest:
                why = f"its key is gone from {source} (tombstoned, then compacted away)"
            elif latest[letter.key] is None:
                why = f"its key was tombstoned on {source} since"
            elif latest[letter.key] != letter.value:
                why = f"a newer record of its key is on {source}"
            else:
                continue
            skipped[_place(letter)] = why
    return skipped


async def _compacted(settings: PlatformSettings, topics: Iterable[str]) -> list[str]:
    """Those of ``topics`` the broker compacts (``cleanup.policy`` has ``compact``)."""
    names = sorted(set(topics))
    if not names:
        return []
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": None}) for n in names]
        )
    finally:
        await admin.close()
    compacted = []
    for response in responses:
        for code, _message, _type, name, entries in response.resources:
            if code != 0:
                raise SourceUnknown(f"{name} (where its dead letters go) cannot be described")
            policy = next((e[1] for e in entries if e[0] == "cleanup.policy"), None) or ""
            if "compact" in policy.split(","):
                compacted.append(name)
    return compacted


async def _latest_records(
    settings: PlatformSettings, topic: str, letters: Sequence[Any]
) -> dict[bytes, bytes | None]:
    """The latest value (None: a tombstone) on ``topic`` of each key of ``letters`` that
    is there at all, read from the start of the partitions they came from (all of them
    for a dead letter that does not say)."""
    keys = {letter.key for letter in letters}
    named = {_facts(letter).get(H_SOURCE_PARTITION, "") for letter in letters}
    reader = log_reader(settings)
    await reader.start()
    try:
        known = await _partitions(settings, topic)
        wanted = known if not all(p.isdigit() for p in named) else sorted(int(p) for p in named)
        partitions = [TopicPartition(topic, p) for p in wanted if p in known]
        reader.assign(partitions)
        await seek_to_start(reader, partitions)
        ends = await reader.end_offsets(partitions)
        latest: dict[bytes, bytes | None] = {}
        while await _behind(reader, ends):
            for tp, records in (await reader.getmany(timeout_ms=1000)).items():
                for r in records:
                    if r.offset < ends[tp] and r.key in keys:
                        latest[r.key] = r.value
        return latest
    finally:
        await reader.stop()


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
    skipped = sum(1 for line in sent if "skipped" in line)
    sys.stderr.write(
        f"{'would replay' if args.dry_run else 'replayed'} {len(sent) - skipped} record(s),"
        f" skipped {skipped} superseded on their compacted topic\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
