"""The verifier: looks for erased subjects (or items) in every store it can reach.

It never reads another service's tables through that service's role. It uses:

* the verifier's role (``imt_verifier``): the auditor's exception, for verification
  only. It can read every table (``pg_read_all_data``) and change none, whatever the
  session asks for; its sessions are read-only as well. Every ``uuid`` and ``uuid[]``
  column of every table of every other service database is searched for the id, and
  every text, json and bytea column for its text (or, in bytes, its raw 16 bytes): a
  table nobody declared is found too, and so is an id kept as a key (the bus outbox's,
  and its rejected rows') or inside json parameters;
  rows a retention rule allows (ids only, within the rule's period) are reported as kept;
  rows kept anonymised by their owner (a rule's ``anonymised_tables``, e.g. invoices under
  a random retention key) hold no id of the subject and are not found, so one that still
  holds it is personal data found;
* the contacts topic, read from the beginning: the last record of the subject's key must
  be a tombstone (or there must be none; compaction may not have run yet);
* the vault: the subject's key must be shredded;
* every restored copy an operator left (``restored_...``, made by ``backups restore``):
  nothing tracks them and no erasure reaches them, so each is searched like a live
  database, and a subject found there fails the verification like anywhere else;
* the newest backup snapshot, restored into scratch databases with the deletion ledger
  replayed (as any restore is), then searched like the live databases. The snapshot is
  the newest live one ``backup_snapshots`` lists, whatever this host's disk holds: one
  listed but not readable here (the backup volume not mounted) fails the verification
  (:class:`SnapshotUnreadable`), so no replica certifies a deletion without it.
  Scratch copies a killed verification left are dropped before every verification:
  known by their lock, which no one holds any more (:mod:`copy_locks`), at any age.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.deletion import backups
from services.deletion.config import DeletionSettings
from services.deletion.copy_locks import CopyOwner
from services.deletion.domain.certificate import Finding, Verdict
from services.deletion.domain.retention import RetentionPolicy
from services.deletion.store import Tracked
from shared.bus.kafka_options import client_options, log_reader, seek_to_start
from shared.databases import SERVICE_DATABASES
from shared.vault import Vault

log = logging.getLogger(__name__)

OWN_DATABASE = "deletion"  # the ledger itself: ids and dates only, kept as proof
Hits = dict[UUID, dict[str, int]]  # id -> "database.table.column" -> rows

# Every column that can hold an id: as a uuid, as text (an id in a text, json or text[]
# column) or as bytes (a bus_outbox key is the subject's id as text, a value may quote it).
_ID_COLUMNS = """
SELECT c.table_name, c.column_name, c.udt_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
  AND c.udt_name IN ('uuid', '_uuid', 'text', '_text', 'varchar', 'json', 'jsonb', 'bytea')
ORDER BY 1, 2
"""


def _scan_sql(table: str, column: str, udt_name: str) -> str:
    """The query counting, per id of ``$1``, the rows of ``table`` holding it in ``column``.

    A uuid column is matched exactly; any other holds the id as text, anywhere in it (a
    key, a json value, an element): found by its text in either case, with or without
    its hyphens (another system's upper-case id, a 32-hex key). Bytes hold it either as
    that text (UTF-8, read through its escaped form, which keeps ASCII as it is) or as
    its 16 raw bytes. Names come from the catalogue, quoted.
    """
    col = f't."{column}"'
    if udt_name == "uuid":
        match = f"{col} = i.id"
    elif udt_name == "_uuid":
        match = f"i.id = ANY({col})"
    elif udt_name == "bytea":
        match = f"({_holds_text(f'lower(encode({col}, {_ESCAPE}))')}"
        match += f" OR position(uuid_send(i.id) IN {col}) > 0)"
    else:
        match = _holds_text(f"lower({col}::text)")
    return (
        f'SELECT i.id, count(*) AS n FROM "{table}" t'  # noqa: S608 - catalogue names
        f" JOIN unnest($1::uuid[]) AS i(id) ON {match} GROUP BY 1"
    )


_ESCAPE = "'escape'"


def _holds_text(lowered: str) -> str:
    """``lowered`` (text, lower case) holds the id's canonical text or its 32 hex digits
    (PostgreSQL writes a uuid's text in lower case)."""
    return (
        f"(strpos({lowered}, i.id::text) > 0"
        f" OR strpos({lowered}, replace(i.id::text, '-', '')) > 0)"
    )


async def scan_database(dsn: str, database: str, ids: Sequence[UUID]) -> Hits:
    """Rows referencing any of ``ids`` in any column that can hold one (read-only session)."""
    hits: Hits = defaultdict(dict)
    conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
    try:
        for col in await conn.fetch(_ID_COLUMNS):
            table, column = col["table_name"], col["column_name"]
            sql = _scan_sql(table, column, col["udt_name"])
            for row in await conn.fetch(sql, list(ids)):
                hits[row["id"]][f"{database}.{table}.{column}"] = row["n"]
    finally:
        await conn.close()
    return hits


async def contact_cards_left(settings: DeletionSettings, subjects: Sequence[UUID]) -> set[UUID]:
    """Subjects whose last record on the contacts topic still carries a value."""
    wanted = {str(s).encode(): s for s in subjects}
    last_has_value: dict[UUID, bool] = {}
    topic = settings.topic("accounts.contacts")
    consumer = log_reader(settings, isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = await _partitions(settings, topic)
        if not partitions:
            raise VerificationError(f"topic {topic} has no partitions")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await seek_to_start(consumer, tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    subject = wanted.get(record.key or b"")
                    if subject is not None:
                        last_has_value[subject] = record.value is not None
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return {s for s, has_value in last_has_value.items() if has_value}


class VerificationError(RuntimeError):
    """A store could not be scanned: the verification is retried, never passed."""


class SnapshotUnreadable(VerificationError):
    """The index lists a live snapshot whose dumps this process cannot read: the backups
    cannot be searched here (their volume is not mounted), so nothing is certified."""


async def _partitions(settings: DeletionSettings, topic: str) -> set[int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"] for t in described for p in t.get("partitions", [])}


class Verifier:
    """Scans every reachable store for a batch of requests; returns a verdict per request."""

    def __init__(
        self,
        settings: DeletionSettings,
        policy: RetentionPolicy,
        vault: Vault,
        deletion_pool: asyncpg.Pool,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._vault = vault
        self._pool = deletion_pool

    async def verify(self, requests: Sequence[Tracked]) -> dict[UUID, Verdict]:
        if not requests:
            return {}
        # Before any scan, whatever the snapshots and deletion_verify_backups: a copy left
        # by a verification killed mid-restore holds a snapshot unreplayed, and with no
        # snapshot left to restore (or backups no longer verified) nothing else drops it.
        await backups.drop_stale_scratch(self._settings)
        now = datetime.now(UTC)
        ids = [_target(t) for t in requests]
        databases = [d for d in SERVICE_DATABASES if d != OWN_DATABASE]
        hits: Hits = defaultdict(dict)
        scanned: list[str] = []
        for database in databases:
            found = await scan_database(self._settings.verifier_dsn(database), database, ids)
            _merge(hits, found, prefix="")
            scanned.append(f"postgres:{database}")
        for target, database in await self._restored_copies():
            try:
                found = await scan_database(self._settings.verifier_dsn(target), database, ids)
            except asyncpg.InvalidCatalogNameError:
                continue  # dropped since it was listed: nothing of anyone is left in it
            _merge(hits, found, prefix=f"restored:{target}/")
            scanned.append(f"postgres:{target}")
        accounts = [t.request.subject_id for t in requests if t.request.whole_account]
        cards: set[UUID] = set()
        if accounts:
            cards = await contact_cards_left(self._settings, accounts)
            scanned.append(f"kafka:{self._settings.topic('accounts.contacts')}")
        snapshot = await self._scan_newest_backup(ids, databases, hits)
        if snapshot:
            scanned.append(f"backup:{snapshot}")
        verdicts = {}
        for tracked in requests:
            verdicts[tracked.request.request_id] = await self._verdict(
                tracked, hits, cards, tuple(scanned), now
            )
        return verdicts

    async def _verdict(
        self,
        tracked: Tracked,
        hits: Hits,
        cards: set[UUID],
        scanned: tuple[str, ...],
        now: datetime,
    ) -> Verdict:
        r = tracked.request
        findings = [
            Finding(place, rows, self._kept_by(place, r.erased_at, now))
            for place, rows in sorted(hits.get(_target(tracked), {}).items())
        ]
        if r.whole_account and r.subject_id in cards:
            findings.append(Finding(f"kafka:{self._settings.topic('accounts.contacts')}", 1))
        shredded = await self._vault.is_shredded(r.subject_id) if r.whole_account else None
        return Verdict(tuple(findings), scanned, shredded)

    def _kept_by(self, place: str, erased_at: datetime | None, now: datetime) -> str | None:
        # place: "[backup:<id>/]<database>.<table>.<column>"
        qualified = place.split("/")[-1].rsplit(".", 1)[0]
        if not self._policy.may_keep(qualified, erased_at, now):
            return None
        rule = self._policy.rule_for_table(qualified)
        return rule.category if rule else None

    async def _restored_copies(self) -> list[tuple[str, str]]:
        """(copy, the service database it is a copy of) for every restored copy there is.

        A copy of the ledger is left out, as the ledger itself is (ids and dates, kept
        as proof); a copy of no known database is searched under its own name.
        """
        # In postgres, where restores under way hold their locks: not on the ledger's pool.
        names = await backups.restored_copies(self._settings)
        copies = []
        for name in names:
            database = next((d for d in SERVICE_DATABASES if name.endswith(f"_{d}")), name)
            if database != OWN_DATABASE:
                copies.append((name, database))
        return copies

    async def _scan_newest_backup(
        self, ids: list[UUID], databases: list[str], hits: Hits
    ) -> str | None:
        if not self._settings.deletion_verify_backups:
            return None
        async with self._pool.acquire() as conn:
            manifest = await backups.newest_snapshot(conn)
        if manifest is None:
            return None  # no snapshot taken yet: no backup to search
        wanted = [d for d in databases if d in manifest.databases]
        unreadable = await asyncio.to_thread(backups.unreadable_dumps, manifest, wanted)
        if unreadable:
            # Not an OSError: the worker would take it for an outage and never count it.
            # Ids and paths only: a snapshot's folder names no one.
            log.error(
                "verifier: snapshot %s is live in backup_snapshots but its dumps of %s"
                " cannot be read in %s on this host (is the backup volume mounted?):"
                " the verification fails",
                manifest.snapshot_id,
                ", ".join(unreadable),
                manifest.folder,
            )
            raise SnapshotUnreadable(
                f"snapshot {manifest.snapshot_id} cannot be read in {manifest.folder}"
                f" ({', '.join(unreadable)}): is the backup volume mounted here?"
            )
        prefix = backups.scratch_prefix()
        # The copies' locks are held until they are dropped: until then, no cleanup takes
        # them for a killed verification's (P-16), however long the restore and scan take.
        async with CopyOwner(self._settings) as owner:
            try:
                targets = await backups.restore(
                    self._settings, manifest, target_prefix=prefix, databases=wanted, owner=owner
                )
                for database, target in targets.items():
                    dsn = self._settings.verifier_dsn(target)
                    found = await scan_database(dsn, database, ids)
                    _merge(hits, found, prefix=f"backup:{manifest.snapshot_id}/")
            finally:
                await backups.drop_databases(self._settings, [f"{prefix}_{d}" for d in wanted])
        return manifest.snapshot_id


def _target(tracked: Tracked) -> UUID:
    r = tracked.request
    return r.subject_id if r.whole_account or r.item_id is None else r.item_id


def _merge(into: Hits, found: Hits, *, prefix: str) -> None:
    for target, places in found.items():
        for place, rows in places.items():
            into[target][f"{prefix}{place}"] = rows
