"""The restore replay on real PostgreSQL: a scratch database with a service's own
migrations stands for a restored snapshot. A deleted request's reply goes again (P-16)
and the verifier can see the request's id in a notice (P-14); an erased subject leaves a
scheduled notice's list; consents go as live; retention releases are replayed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.accounts.context import RETENTION_SUBJECT_INDEX
from services.accounts.handlers import _ACCOUNT_TABLES
from services.deletion import backups
from services.deletion.config import DeletionSettings
from services.deletion.domain.replay import (
    LedgerEntry,
    ReleaseEntry,
    ReplayDelete,
    load_subject_columns,
    replay_plan,
)
from services.deletion.verifier import scan_database
from services.notifier import store as notifier_store
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import BUS_MIGRATIONS
from shared.vault.crypto import blind_index
from tests.integration.deletion.harness import unowned_database

NOTIFIER_MIGRATIONS = Path(notifier_store.__file__).parent / "migrations"
ACCOUNTS_MIGRATIONS = NOTIFIER_MIGRATIONS.parents[1] / "accounts" / "migrations"
pytestmark = pytest.mark.usefixtures("stack")


@dataclass(frozen=True)
class Copy:
    """A restored copy of one service's database (scratch, dropped after the test)."""

    settings: DeletionSettings
    database: str
    target: str

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(self.settings.admin_dsn(self.target))
        try:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            yield conn
        finally:
            await conn.close()

    def plan(
        self, entries: list[LedgerEntry], releases: list[ReleaseEntry] | None = None
    ) -> list[ReplayDelete]:
        columns = load_subject_columns(self.settings.deletion_subject_columns_file)
        index_key = self.settings.blind_index_key.get_secret_value().encode()
        return replay_plan(self.database, columns, entries, releases or [], index_key)

    async def replay(
        self, entries: list[LedgerEntry], releases: list[ReleaseEntry] | None = None
    ) -> int:
        return await backups.apply_replay(self.settings, self.target, self.plan(entries, releases))

    async def scan(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
        return await scan_database(self.settings.admin_dsn(self.target), self.database, ids)


@asynccontextmanager
async def restored_copy(database: str, migrations: Path) -> AsyncIterator[Copy]:
    settings = DeletionSettings()
    copy = Copy(settings, database, f"imt_replay_test_{uuid.uuid4().hex[:8]}")
    await unowned_database(settings, copy.target)
    try:
        conn = await asyncpg.connect(settings.admin_dsn(copy.target))
        try:
            await apply_migrations(
                conn,
                migration_files("bus", BUS_MIGRATIONS) + migration_files(database, migrations),
            )
        finally:
            await conn.close()
        yield copy
    finally:
        await backups.drop_databases(settings, [copy.target])


def _erasure(
    subject: uuid.UUID, scope: str = "account", item: uuid.UUID | None = None
) -> LedgerEntry:
    return LedgerEntry(uuid.uuid4(), subject, scope, item, datetime.now(UTC), None)  # type: ignore[arg-type]


async def _reply(conn: asyncpg.Connection, user: uuid.UUID, request: uuid.UUID) -> uuid.UUID:
    notice = uuid.uuid4()
    await conn.execute(
        "INSERT INTO notices (notice_id, template, category, audience, params, channels,"
        " source, status) VALUES ($1, 'request_reply', 'transactional', 'listed', $2,"
        " ARRAY['email','inbox'], 'accounts', 'fanned_out')",
        notice,
        {"request_id": str(request)},
    )
    await conn.execute("INSERT INTO inbox_items (user_id, notice_id) VALUES ($1, $2)", user, notice)
    await conn.execute("INSERT INTO deliveries (user_id, notice_id) VALUES ($1, $2)", user, notice)
    return notice


async def test_a_deleted_requests_reply_does_not_come_back_with_a_restore() -> None:
    async with restored_copy("notifier", NOTIFIER_MIGRATIONS) as copy:
        user, deleted, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        async with copy.connection() as conn:
            await _reply(conn, user, deleted)
            control = await _reply(conn, user, kept)

        seen = await copy.scan([deleted])
        # Its own column, and the params it came from (found as text in the json).
        assert seen[deleted] == {"notifier.notices.request_id": 1, "notifier.notices.params": 1}

        assert await copy.replay([_erasure(user, "request", deleted)]) == 3

        async with copy.connection() as conn:
            left = await conn.fetch(
                "SELECT 'inbox' AS t, notice_id FROM inbox_items"
                " UNION ALL SELECT 'email', notice_id FROM deliveries"
                " UNION ALL SELECT 'notice', notice_id FROM notices"
            )
        assert sorted((r["t"], r["notice_id"]) for r in left) == sorted(
            [("inbox", control), ("email", control), ("notice", control)]
        )
        assert deleted not in await copy.scan([deleted])


async def test_a_restore_takes_an_erased_subject_out_of_a_scheduled_notices_list() -> None:
    """As the notifier's erasure does live: the notice stays for its other recipients."""
    async with restored_copy("notifier", NOTIFIER_MIGRATIONS) as copy:
        erased, other, notice = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        async with copy.connection() as conn:
            await conn.execute(
                "INSERT INTO notices (notice_id, template, category, audience, listed, channels,"
                " source, status, send_at) VALUES ($1, 'incident', 'account_security', 'listed',"
                " $2, ARRAY['email','inbox'], 'accounts', 'scheduled', now() + interval '1 day')",
                notice,
                [erased, other],
            )

        await copy.replay([_erasure(erased)])

        async with copy.connection() as conn:
            listed = await conn.fetchval("SELECT listed FROM notices WHERE notice_id = $1", notice)
        assert listed == [other]
        assert erased not in await copy.scan([erased])


async def _recipient(conn: asyncpg.Connection, name: str) -> uuid.UUID:
    recipient = uuid.uuid4()
    await conn.execute(
        "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
        " VALUES ($1, $2, 'partner', 'repairs', ARRAY['name'], $3)",
        recipient,
        name,
        uuid.uuid4(),
    )
    return recipient


async def _consented(
    conn: asyncpg.Connection, subject: uuid.UUID, recipient: uuid.UUID, *, disclosed: bool
) -> None:
    await conn.execute(
        "INSERT INTO consents (user_id, recipient_id, purpose, granted)"
        " VALUES ($1, $2, 'repairs', true)",
        subject,
        recipient,
    )
    if disclosed:
        await conn.execute(
            "INSERT INTO disclosures (export_id, recipient_id, user_id, fields, operator_id)"
            " VALUES ($1, $2, $3, ARRAY['name'], $4)",
            uuid.uuid4(),
            recipient,
            subject,
            uuid.uuid4(),
        )


async def test_a_restore_keeps_only_the_consents_a_disclosure_was_made_under() -> None:
    """As the accounts erasure does live: a consent to a recipient given the subject's
    data is the proof of that disclosure; the others go."""
    async with restored_copy("accounts", ACCOUNTS_MIGRATIONS) as copy:
        user, someone = uuid.uuid4(), uuid.uuid4()
        async with copy.connection() as conn:
            told, untold = await _recipient(conn, "told"), await _recipient(conn, "untold")
            await _consented(conn, user, told, disclosed=True)
            await _consented(conn, user, untold, disclosed=False)
            await _consented(conn, someone, untold, disclosed=False)

        await copy.replay([_erasure(user)])

        async with copy.connection() as conn:
            left = await conn.fetch("SELECT user_id, recipient_id FROM consents")
        assert sorted(tuple(r) for r in left) == sorted([(user, told), (someone, untold)])


async def _invoice(conn: asyncpg.Connection, retention_key: uuid.UUID) -> None:
    """An invoice kept anonymised: no user, a retention key (as accounts' erasure leaves it)."""
    await conn.execute(
        "INSERT INTO invoices (id, retention_key, number, amount, currency, issued_on,"
        " repair_reference, payment_provider, provider_reference)"
        " VALUES ($1, $2, $3, 10, 'EUR', current_date, 'R-1', 'psp', 'P-1')",
        uuid.uuid4(),
        retention_key,
        f"INV-{uuid.uuid4().hex[:10]}",
    )


@pytest.mark.promise("P-16")
async def test_a_restore_replays_the_releases_a_snapshot_predates() -> None:
    """A snapshot taken between an erasure and the release of what it kept holds those
    rows: the anonymised invoices (found only through the subject's blind index) and the
    disclosure log. Restored after the releases, it loses them again; another erased
    subject's kept rows, whose periods run on, stay."""
    async with restored_copy("accounts", ACCOUNTS_MIGRATIONS) as copy:
        index_key = copy.settings.blind_index_key.get_secret_value().encode()
        released, kept = uuid.uuid4(), uuid.uuid4()
        async with copy.connection() as conn:
            recipient = await _recipient(conn, "told")
            for subject in (released, kept):
                key = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO retention_keys (subject_index, category, retention_key)"
                    " VALUES ($1, 'financial_records', $2)",
                    blind_index(index_key, RETENTION_SUBJECT_INDEX, str(subject)),
                    key,
                )
                await _invoice(conn, key)
                await _invoice(conn, key)
                await _consented(conn, subject, recipient, disclosed=True)

        releases = [
            ReleaseEntry(released, "financial_records", None),
            ReleaseEntry(released, "disclosure_log", None),
        ]
        # Two invoices, their key, a consent and a disclosure.
        assert await copy.replay([], releases) == 5

        async with copy.connection() as conn:
            left = {
                table: await conn.fetchval(f"SELECT count(*) FROM {table}")
                for table in ("invoices", "retention_keys", "consents", "disclosures")
            }
            owners = {r[0] for r in await conn.fetch("SELECT user_id FROM disclosures")}
        assert left == {"invoices": 2, "retention_keys": 1, "consents": 1, "disclosures": 1}
        assert owners == {kept}


async def _cascading_from(conn: asyncpg.Connection, parents: set[str]) -> set[str]:
    """``parents`` and every table whose rows go with theirs (ON DELETE CASCADE, at any
    depth), as the migrated schema has it (a constraint a later migration dropped is gone)."""
    links = await conn.fetch(
        "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent"
        " FROM pg_constraint WHERE contype = 'f' AND confdeltype = 'c'"
    )
    reached = set(parents)
    while grown := {r["child"] for r in links if r["parent"] in reached} - reached:
        reached |= grown
    return reached


async def test_every_table_the_live_account_erasure_empties_the_replay_empties_too() -> None:
    """Accounts' erasure and the replay's list are written apart (neither service reads
    the other's code), so nothing else keeps them in step: a table the live erasure
    empties that the replay neither names nor reaches by a cascade brings the erased
    subject back in every restored copy (P-16)."""
    columns = load_subject_columns(DeletionSettings().deletion_subject_columns_file)
    plan = replay_plan("accounts", columns, [_erasure(uuid.uuid4())])
    emptied = {d.child or d.table for d in plan if not d.array}
    async with (
        restored_copy("accounts", ACCOUNTS_MIGRATIONS) as copy,
        copy.connection() as conn,
    ):
        replayed = await _cascading_from(conn, emptied)
    live = {table for table, _delete in _ACCOUNT_TABLES}
    assert live - replayed == set()


async def test_a_restore_drops_a_password_reset_the_erased_subject_was_waiting_for() -> None:
    """pending_resets has no foreign key to users (accounts migration 020): the user's
    row going does not take it along."""
    async with restored_copy("accounts", ACCOUNTS_MIGRATIONS) as copy:
        erased, other = uuid.uuid4(), uuid.uuid4()
        async with copy.connection() as conn:
            for user in (erased, other):
                await conn.execute("INSERT INTO pending_resets (user_id) VALUES ($1)", user)

        await copy.replay([_erasure(erased)])

        async with copy.connection() as conn:
            left = {r[0] for r in await conn.fetch("SELECT user_id FROM pending_resets")}
        assert left == {other}
        assert erased not in await copy.scan([erased])
