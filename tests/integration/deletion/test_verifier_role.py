"""The verifier's role reads any service's tables and can change none of them."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from services.deletion import verifier
from services.deletion.config import DeletionSettings

SETTINGS = DeletionSettings(environment="test")


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("database", ["accounts", "notifier", "analytics"])
async def test_the_verifier_may_connect_to_every_store(database: str) -> None:
    conn = await asyncpg.connect(SETTINGS.verifier_dsn(database))
    try:
        assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
    finally:
        await conn.close()


async def test_the_verifier_reads_every_table_and_writes_none(scratch_dsn: str) -> None:
    # A database with tables the verifier was never granted anything on (the bus's).
    database = scratch_dsn.rsplit("/", 1)[1].split("?")[0]
    conn = await asyncpg.connect(SETTINGS.verifier_dsn(database))
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        assert {"bus_outbox", "bus_processed_events"} <= {t["table_name"] for t in tables}
        for t in tables:
            await conn.fetchval(f'SELECT count(*) FROM "{t["table_name"]}"')
        # Not only a read-only session: the privileges are missing, so a session made
        # writable changes nothing either.
        await conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM bus_processed_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE verifier_was_here (id int)")
    finally:
        await conn.close()


async def test_the_verifier_finds_an_id_kept_as_bytes_text_or_json(scratch_dsn: str) -> None:
    """Not only uuid columns: the bus's tables hold a subject's id as a bytea key (its
    text), a value may carry its raw bytes, and json or text may quote it."""
    database = scratch_dsn.rsplit("/", 1)[1].split("?")[0]
    subject, item, absent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    owner = await asyncpg.connect(scratch_dsn)
    try:
        await owner.execute(
            "INSERT INTO bus_outbox (topic, key, value) VALUES ('accounts.contacts', $1, NULL)",
            str(subject).encode(),
        )
        await owner.execute(
            "INSERT INTO bus_outbox_rejected (seq, topic, key, value, headers, created_at, reason)"
            " VALUES (1, 't', NULL, $1, $2, now(), $3)",
            b"\x00prefix" + item.bytes + b"suffix",
            json.dumps({"params": {"request_id": str(subject)}}),  # no json codec here
            f"refused: {item}",
        )
    finally:
        await owner.close()

    hits = await verifier.scan_database(
        SETTINGS.verifier_dsn(database), "scratch", [subject, item, absent]
    )
    assert hits[subject] == {
        "scratch.bus_outbox.key": 1,
        "scratch.bus_outbox_rejected.headers": 1,
    }
    assert hits[item] == {
        "scratch.bus_outbox_rejected.value": 1,
        "scratch.bus_outbox_rejected.reason": 1,
    }
    assert absent not in hits


async def test_the_verifier_finds_an_id_in_upper_case_or_without_its_hyphens(
    scratch_dsn: str,
) -> None:
    """Another system may write an id in upper case, or as 32 hex digits: still found, in
    text and in bytes, and an id that only shares some digits is not."""
    database = scratch_dsn.rsplit("/", 1)[1].split("?")[0]
    upper, hexed, in_bytes, absent = (uuid.uuid4() for _ in range(4))
    owner = await asyncpg.connect(scratch_dsn)
    try:
        await owner.execute(
            "INSERT INTO bus_outbox_rejected (seq, topic, key, value, headers, created_at, reason)"
            " VALUES (1, 't', $1, NULL, '{}', now(), $2)",
            b"\xff\\" + in_bytes.hex.upper().encode(),
            f"customer {str(upper).upper()} and ref {hexed.hex} ({absent.hex[:31]})",
        )
    finally:
        await owner.close()

    hits = await verifier.scan_database(
        SETTINGS.verifier_dsn(database), "scratch", [upper, hexed, in_bytes, absent]
    )
    assert hits[upper] == {"scratch.bus_outbox_rejected.reason": 1}
    assert hits[hexed] == {"scratch.bus_outbox_rejected.reason": 1}
    assert hits[in_bytes] == {"scratch.bus_outbox_rejected.key": 1}
    assert absent not in hits
