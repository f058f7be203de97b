"""Checking the operator audit log's hash chain, in the database and against Kafka.

Every audit row is linked by the database (migration 005_audit_chain.sql):
``chain = sha256(previous chain || canonical(row))`` in ``chain_seq`` order, and its
place and hash are published on ``accounts.audit`` in the row's own transaction. So:

* a row changed, removed or slipped in breaks the chain from there on (``verify``);
* a chain rewritten to hide that no longer matches what Kafka holds (``compare``):
  the role that owns the table can disable its triggers, but cannot rewrite the topic.

The canonical bytes are computed here independently of the database's SQL function,
so a replaced function cannot vouch for itself. ``python -m
services.accounts.audit_chain`` (``make audit-verify``) runs both checks and prints a
JSON report; it exits 1 when either fails.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from services.accounts.config import AccountsSettings
from shared.bus import Delivery, read_record
from shared.bus.kafka_options import log_reader, seek_to_start
from shared.db.pool import Connection
from shared.events.catalogue.accounts import AuditLogAppended
from shared.events.topics import ACCOUNTS_AUDIT

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FETCH = 1000


def _field(value: str | None) -> str:
    # <length>:<text>, so that no text can pass for a boundary between two fields.
    return "-" if value is None else f"{len(value)}:{value}"


Row = Mapping[str, Any] | asyncpg.Record


def canonical(row: Row) -> bytes:
    """The bytes of an audit row that its chain link covers (as audit_log_canonical)."""
    at: datetime = row["at"]
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    fields = [
        str(row["chain_seq"]),
        str(row["id"]),
        str(row["operator_id"]),
        str(row["subject_id"]),
        row["action"],
        ",".join(row["fields"]),
        row["purpose"],
        row["request_reference"],
        str(micros),
    ]
    return "|".join(_field(f) for f in fields).encode()


def link(previous: bytes, row: Row) -> bytes:
    return hashlib.sha256(previous + canonical(row)).digest()


@dataclass(frozen=True)
class ChainReport:
    rows: int
    head_seq: int  # 0 for an empty log
    head: str  # hex of the last link ("" for an empty log, or when a break hides it)
    broken_at: int | None = None  # the first chain_seq that does not hold
    reason: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


async def _rows(conn: Connection, after: int = 0) -> AsyncIterator[asyncpg.Record]:
    while True:
        batch = await conn.fetch(
            "SELECT * FROM audit_log WHERE chain_seq > $1 ORDER BY chain_seq LIMIT $2",
            after,
            _FETCH,
        )
        for row in batch:
            yield row
        if len(batch) < _FETCH:
            return
        after = batch[-1]["chain_seq"]


def head_break(since: ChainReport, stored: bytes | None) -> ChainReport | None:
    """The break at the head of an earlier intact check, given the link its row has now
    (None: the row is gone); None while it still has the link checked then.

    Rows cut from the end leave every remaining link valid, and the next row written is
    linked from the new last one, taking the cut row's place: only the link checked
    earlier shows it. The break is at that row; the link before it is not known here.
    """
    if since.head_seq == 0 or stored == bytes.fromhex(since.head):
        return None
    seq = since.head_seq
    reason = (
        f"row {seq}, checked before, is missing"
        if stored is None
        else f"row {seq} no longer has the link it had when checked"
    )
    return ChainReport(since.rows - 1, seq - 1, "", seq, reason)


async def verify(conn: Connection, since: ChainReport | None = None) -> ChainReport:
    """Recompute every link from the first row, or only those after the head of an
    earlier intact report ``since`` (once that head is found unchanged); report the
    first that does not hold."""
    if since is None:
        previous, expected, rows = b"", 1, 0
    else:
        assert since.intact, "only an intact chain can be continued"
        stored = await conn.fetchval(
            "SELECT chain FROM audit_log WHERE chain_seq = $1", since.head_seq
        )
        broken = head_break(since, None if stored is None else bytes(stored))
        if broken is not None:
            return broken
        previous, expected, rows = bytes.fromhex(since.head), since.head_seq + 1, since.rows
    async for row in _rows(conn, expected - 1):
        seq = row["chain_seq"]
        if seq != expected:  # rows come in increasing chain_seq: some are missing
            reason = f"rows {expected} to {seq - 1} of the chain are missing"
            return ChainReport(rows, expected - 1, previous.hex(), expected, reason)
        recomputed = link(previous, row)
        if recomputed != bytes(row["chain"]):
            return ChainReport(rows, seq - 1, previous.hex(), seq, "the row or its link changed")
        previous, expected, rows = recomputed, expected + 1, rows + 1
    return ChainReport(rows, expected - 1, previous.hex())


@dataclass(frozen=True)
class CheckpointReport:
    checkpoints: int  # links published on accounts.audit
    latest_seq: int  # the newest published link (0: none)
    mismatched_at: int | None = None  # the first published link the database contradicts
    reason: str | None = None

    @property
    def agrees(self) -> bool:
        return self.mismatched_at is None


async def compare(
    conn: Connection, published: Mapping[int, str], republished: Sequence[int] = ()
) -> CheckpointReport:
    """Every published link must be in the database, unchanged. One that holds vouches
    for every row before it (each link covers all earlier ones). ``republished``: links
    published again with another value (:func:`published_links`)."""
    latest, seqs = max(published, default=0), sorted(published)
    if republished:
        reason = "published again with another link: the chain was rewritten from there"
        return CheckpointReport(len(published), latest, min(republished), reason)
    for start in range(0, len(seqs), _FETCH):
        chunk = seqs[start : start + _FETCH]
        rows = await conn.fetch(
            "SELECT chain_seq, chain FROM audit_log WHERE chain_seq = ANY($1::bigint[])", chunk
        )
        stored = {r["chain_seq"]: bytes(r["chain"]).hex() for r in rows}
        for seq in chunk:
            if seq not in stored:
                reason = "published, not in the database"
                return CheckpointReport(len(published), latest, seq, reason)
            if stored[seq] != published[seq]:
                return CheckpointReport(len(published), latest, seq, "the database's link differs")
    return CheckpointReport(len(published), latest)


@dataclass(frozen=True)
class PublishedLinks:
    first: dict[int, str]  # the link each sequence number was first published with
    republished: list[int]  # those published again with another link


async def published_links(
    settings: AccountsSettings, topic: str = ACCOUNTS_AUDIT.name
) -> PublishedLinks:
    """Every link on the audit topic, read from the beginning up to its current end.

    The first link of each row counts: the table's owner can also write the outbox, so
    a rewritten chain can be published after the true one. A row published again with
    the same link is the relay's at-least-once; with another, a rewrite."""
    consumer = log_reader(settings)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # this topic's partitions, too
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await seek_to_start(consumer, partitions)
        links: dict[int, str] = {}
        republished: set[int] = set()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    read = read_record(r.value, r.key, r.topic, r.partition, r.offset)
                    if isinstance(read, Delivery) and isinstance(read.event, AuditLogAppended):
                        seq, chain = read.event.chain_seq, read.event.chain
                        if links.setdefault(seq, chain) != chain:
                            republished.add(seq)
        return PublishedLinks(links, sorted(republished))
    finally:
        await consumer.stop()


async def audit_report(settings: AccountsSettings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.database_dsn("accounts"))
    try:
        chain = await verify(conn)
        published = await published_links(settings)
        checkpoints = await compare(conn, published.first, published.republished)
    finally:
        await conn.close()
    return {
        "intact": chain.intact and checkpoints.agrees,
        "chain": asdict(chain),
        "kafka": asdict(checkpoints),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.accounts.audit_chain",
        description="Check the audit log's hash chain, and the chain against Kafka.",
    )
    parser.parse_args(argv)
    report = asyncio.run(audit_report(AccountsSettings()))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0 if report["intact"] else 1


if __name__ == "__main__":
    sys.exit(main())
