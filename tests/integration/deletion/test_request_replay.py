"""A restored notifier snapshot loses a deleted request's reply again (P-16), and the
verifier can see the request's id in a notice (P-14): real PostgreSQL, a scratch
database with the notifier's own migrations."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.accounts.context import RETENTION_SUBJECT_INDEX
from services.deletion import backups
from services.deletion.config import DeletionSettings
from services.deletion.domain.replay import (
    LedgerEntry,
    ReleaseEntry,
    load_subject_columns,
    replay_plan,
)
from services.deletion.verifier import scan_database
from services.notifier import store as notifier_store
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import BUS_MIGRATIONS
from shared.vault.crypto import blind_index

NOTIFIER_MIGRATIONS = Path(notifier_store.__file__).parent / "migrations"


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


@pytest.mark.usefixtures("stack")
async def test_a_deleted_requests_reply_does_not_come_back_with_a_restore() -> None:
    settings = DeletionSettings()
    target = f"imt_replay_test_{uuid.uuid4().hex[:8]}"
    await backups._create_database(settings, target)
    try:
        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            await apply_migrations(
                conn,
                migration_files("bus", BUS_MIGRATIONS)
                + migration_files("notifier", NOTIFIER_MIGRATIONS),
            )
            user, deleted, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            await _reply(conn, user, deleted)
            control = await _reply(conn, user, kept)
        finally:
            await conn.close()

        seen = await scan_database(settings.admin_dsn(target), "notifier", [deleted])
        # Its own column, and the params it came from (found as text in the json).
        assert seen[deleted] == {"notifier.notices.request_id": 1, "notifier.notices.params": 1}

        erased = LedgerEntry(uuid.uuid4(), user, "request", deleted, datetime.now(UTC), None)
        columns = load_subject_columns(settings.deletion_subject_columns_file)
        plan = replay_plan("notifier", columns, [erased])
        assert await backups.apply_replay(settings, target, plan) == 3

        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            left = await conn.fetch(
                "SELECT 'inbox' AS t, notice_id FROM inbox_items"
                " UNION ALL SELECT 'email', notice_id FROM deliveries"
                " UNION ALL SELECT 'notice', notice_id FROM notices"
            )
        finally:
            await conn.close()
        assert sorted((r["t"], r["notice_id"]) for r in left) == sorted(
            [("inbox", control), ("email", control), ("notice", control)]
        )
        seen = await scan_database(settings.admin_dsn(target), "notifier", [deleted])
        assert deleted not in seen
    finally:
        await backups.drop_databases(settings, [target])


@pytest.mark.usefixtures("stack")
async def test_a_restore_takes_an_erased_subject_out_of_a_scheduled_notices_list() -> None:
    """As the notifier's erasure does live: the notice stays for its other recipients."""
    settings = DeletionSettings()
    target = f"imt_replay_test_{uuid.uuid4().hex[:8]}"
    await backups._create_database(settings, target)
    try:
        erased, other = uuid.uuid4(), uuid.uuid4()
        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            await apply_migrations(
                conn,
                migration_files("bus", BUS_MIGRATIONS)
                + migration_files("notifier", NOTIFIER_MIGRATIONS),
            )
            notice = uuid.uuid4()
            await conn.execute(
                "INSERT INTO notices (notice_id, template, category, audience, listed, channels,"
                " source, status, send_at) VALUES ($1, 'incident', 'account_security', 'listed',"
                " $2, ARRAY['email','inbox'], 'accounts', 'scheduled', now() + interval '1 day')",
                notice,
                [erased, other],
            )
        finally:
            await conn.close()

        entry = LedgerEntry(uuid.uuid4(), erased, "account", None, datetime.now(UTC), None)
        columns = load_subject_columns(settings.deletion_subject_columns_file)
        await backups.apply_replay(settings, target, replay_plan("notifier", columns, [entry]))

        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            listed = await conn.fetchval("SELECT listed FROM notices WHERE notice_id = $1", notice)
        finally:
            await conn.close()
        assert listed == [other]
        assert erased not in await scan_database(settings.admin_dsn(target), "notifier", [erased])
    finally:
        await backups.drop_databases(settings, [target])


ACCOUNTS_MIGRATIONS = Path(notifier_store.__file__).parents[1] / "accounts" / "migrations"


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


@pytest.mark.usefixtures("stack")
async def test_a_restore_keeps_only_the_consents_a_disclosure_was_made_under() -> None:
    """As the accounts erasure does live: a consent to a recipient given the subject's
    data is the proof of that disclosure; the others go."""
    settings = DeletionSettings()
    target = f"imt_replay_test_{uuid.uuid4().hex[:8]}"
    await backups._create_database(settings, target)
    try:
        user, someone = uuid.uuid4(), uuid.uuid4()
        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            await apply_migrations(
                conn,
                migration_files("bus", BUS_MIGRATIONS)
                + migration_files("accounts", ACCOUNTS_MIGRATIONS),
            )
            told, untold = await _recipient(conn, "told"), await _recipient(conn, "untold")
            for subject, recipient in ((user, told), (user, untold), (someone, untold)):
                await conn.execute(
                    "INSERT INTO consents (user_id, recipient_id, purpose, granted)"
                    " VALUES ($1, $2, 'repairs', true)",
                    subject,
                    recipient,
                )
            await conn.execute(
                "INSERT INTO disclosures (export_id, recipient_id, user_id, fields, operator_id)"
                " VALUES ($1, $2, $3, ARRAY['name'], $4)",
                uuid.uuid4(),
                told,
                user,
                uuid.uuid4(),
            )
        finally:
            await conn.close()

        entry = LedgerEntry(uuid.uuid4(), user, "account", None, datetime.now(UTC), None)
        columns = load_subject_columns(settings.deletion_subject_columns_file)
        await backups.apply_replay(settings, target, replay_plan("accounts", columns, [entry]))

        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            left = await conn.fetch("SELECT user_id, recipient_id FROM consents")
        finally:
            await conn.close()
        assert sorted(tuple(r) for r in left) == sorted([(user, told), (someone, untold)])
    finally:
        await backups.drop_databases(settings, [target])


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
@pytest.mark.usefixtures("stack")
async def test_a_restore_replays_the_releases_a_snapshot_predates() -> None:
    """A snapshot taken between an erasure and the release of what it kept holds those
    rows: the anonymised invoices (found only through the subject's blind index) and the
    disclosure log. Restored after the releases, it loses them again; another erased
    subject's kept rows, whose periods run on, stay."""
    settings = DeletionSettings()
    target = f"imt_replay_test_{uuid.uuid4().hex[:8]}"
    await backups._create_database(settings, target)
    index_key = settings.blind_index_key.get_secret_value().encode()
    try:
        released, kept = uuid.uuid4(), uuid.uuid4()
        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            await apply_migrations(
                conn,
                migration_files("bus", BUS_MIGRATIONS)
                + migration_files("accounts", ACCOUNTS_MIGRATIONS),
            )
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
                await conn.execute(
                    "INSERT INTO consents (user_id, recipient_id, purpose, granted)"
                    " VALUES ($1, $2, 'repairs', true)",
                    subject,
                    recipient,
                )
                await conn.execute(
                    "INSERT INTO disclosures (export_id, recipient_id, user_id, fields,"
                    " operator_id) VALUES ($1, $2, $3, ARRAY['name'], $4)",
                    uuid.uuid4(),
                    recipient,
                    subject,
                    uuid.uuid4(),
                )
        finally:
            await conn.close()

        releases = [
            ReleaseEntry(released, "financial_records", None),
            ReleaseEntry(released, "disclosure_log", None),
        ]
        columns = load_subject_columns(settings.deletion_subject_columns_file)
        plan = replay_plan("accounts", columns, [], releases, index_key)
        # Two invoices, their key, a consent and a disclosure.
        assert await backups.apply_replay(settings, target, plan) == 5

        conn = await asyncpg.connect(settings.admin_dsn(target))
        try:
            left = {
                table: await conn.fetchval(f"SELECT count(*) FROM {table}")
                for table in ("invoices", "retention_keys", "consents", "disclosures")
            }
            owners = {r[0] for r in await conn.fetch("SELECT user_id FROM disclosures")}
        finally:
            await conn.close()
        assert left == {"invoices": 2, "retention_keys": 1, "consents": 1, "disclosures": 1}
        assert owners == {kept}
    finally:
        await backups.drop_databases(settings, [target])
