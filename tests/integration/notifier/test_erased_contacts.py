"""A contact tombstoned while the erasure's own email still waits keeps its address for
that email only: no other notice is planned for it or mailed to it. The real handlers
and Sender on PostgreSQL, with a capturing transport."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from services.notifier import handlers, store
from shared.events.catalogue.deletion import EraseSubject
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact, send_all

ADDRESS = "leaving@example.org"


def _notice(uid: uuid.UUID, template: str, category: str, **extra: object) -> store.Notice:
    fields: dict[str, object] = {
        "notice_id": uuid.uuid4(), "template": template, "category": category,
        "audience": "listed", "params": {}, "channels": ("email",), "recipient": "user",
        "pinned": False, "source": "test", "user_ids": (uid,), **extra,
    }  # fmt: skip
    return store.Notice(**fields)  # type: ignore[arg-type]


async def test_only_the_erasure_email_reaches_a_tombstoned_contact(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, request = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, await sealed_contact(vault, uid, ADDRESS))
        # Planned before the tombstone: a security notice, and the erasure's own email.
        await handlers.accept_notice(conn, _notice(uid, "password_changed", "account_security"))
        await handlers.accept_notice(
            conn, _notice(uid, "erasure_done", "transactional", erasure_request=request)
        )
        await store.erase_contact_on_tombstone(conn, uid)
        kept = await conn.fetchval("SELECT erase_pending FROM contacts WHERE user_id = $1", uid)
        assert kept is True  # kept for the erasure's email
        # Planned after it: an announcement to everyone leaves the erased contact out.
        everyone = _notice(
            uid, "service_announcement", "service_announcement", audience="all",
            channels=("email", "inbox"), user_ids=(), params={"subject": "S", "message": "M"},
        )  # fmt: skip
        await handlers.accept_notice(conn, everyone)
        planned = await conn.fetchval(
            "SELECT count(*) FROM inbox_items WHERE user_id = $1 AND notice_id = $2",
            uid,
            everyone.notice_id,
        )
        assert planned == 0

    wires = await send_all(pool, vault, {})
    mailed = [w for w in wires if w.recipient == ADDRESS]
    assert len(mailed) == 1
    assert b"Your data has been deleted" in mailed[0].data
    outcomes = await pool.fetch(
        "SELECT n.template, d.status, d.outcome, d.reason FROM deliveries d"
        " JOIN notices n USING (notice_id) WHERE d.user_id = $1 ORDER BY n.template",
        uid,
    )
    assert [tuple(r) for r in outcomes] == [
        ("erasure_done", "done", "sent", None),
        ("password_changed", "done", "failed", "the subject was erased"),
    ]


async def test_a_tombstone_before_the_erasure_command_still_lets_its_email_go(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """Accounts tombstones the card when told to erase; the notifier is told on another
    topic, so the tombstone can come first. The address waits for the erasure's email,
    then goes with the erasure."""
    uid = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, await sealed_contact(vault, uid, ADDRESS))
        await store.erase_contact_on_tombstone(conn, uid)
        kept = await conn.fetchval("SELECT erase_pending FROM contacts WHERE user_id = $1", uid)
        assert kept is True
        command = EraseSubject(request_id=uuid.uuid4(), subject_id=uid)
        await handlers.start_erasure(conn, vault, command)

    wires = await send_all(pool, vault, {})
    mailed = [w for w in wires if w.recipient == ADDRESS]
    assert len(mailed) == 1
    assert b"Your data has been deleted" in mailed[0].data
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM contacts WHERE user_id = $1", uid) == 0
        state = await conn.fetchval(
            "SELECT state FROM erasures WHERE request_id = $1", command.request_id
        )
        assert state == "done"
        # A tombstone read again (a rewind) after the erasure finds nothing to keep.
        await store.erase_contact_on_tombstone(conn, uid)
        assert await conn.fetchval("SELECT count(*) FROM contacts WHERE user_id = $1", uid) == 0


@pytest.mark.parametrize("then", ["the dead letter is replayed", "the operator retries"])
async def test_a_final_email_given_up_on_for_now_keeps_the_rows_for_a_replay(
    pool: asyncpg.Pool, vault: Vault, then: str
) -> None:
    """The mail server stayed away past the last attempt: the dead letter (and the
    address it needs) is kept, not erased with the rest in the same breath. A replay
    then sends it and erases; an operator's retry of the escalated request (the same
    command again) erases without it."""
    uid = uuid.uuid4()
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=uid)
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, await sealed_contact(vault, uid, ADDRESS))
        await handlers.start_erasure(conn, vault, command)
        await store.erase_contact_on_tombstone(conn, uid)  # accounts tombstones the card

    assert await send_all(pool, vault, {ADDRESS: 451}) == []
    async with pool.acquire() as conn:
        # Hours later, the sweep of tombstoned contacts keeps the one the replay needs.
        await conn.execute(
            "UPDATE contacts SET updated_at = now() - interval '2 hours' WHERE user_id = $1", uid
        )
        await store.forget_tombstoned_contacts(conn)
        state = await conn.fetchval(
            "SELECT state FROM erasures WHERE request_id = $1", command.request_id
        )
        assert state == "confirming"
        assert await conn.fetchval("SELECT count(*) FROM contacts WHERE user_id = $1", uid) == 1
        [dead] = await conn.fetch(
            "SELECT id, status, outcome FROM deliveries WHERE user_id = $1", uid
        )
        assert (dead["status"], dead["outcome"]) == ("dead", "failed")

        if then == "the dead letter is replayed":
            assert await store.replay_dead(conn, delivery_ids=[dead["id"]]) == 1
        else:
            async with conn.transaction():
                await handlers.start_erasure(conn, vault, command)

    mailed = [w for w in await send_all(pool, vault, {}) if w.recipient == ADDRESS]
    assert len(mailed) == (1 if then == "the dead letter is replayed" else 0)
    async with pool.acquire() as conn:
        state = await conn.fetchval(
            "SELECT state FROM erasures WHERE request_id = $1", command.request_id
        )
        assert state == "done"
        assert await conn.fetchval("SELECT count(*) FROM contacts WHERE user_id = $1", uid) == 0
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE user_id = $1", uid) == 0


async def _receipts(pool: asyncpg.Pool, request_id: uuid.UUID) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "SELECT convert_from(value, 'UTF8') AS value FROM bus_outbox"
        " WHERE topic = 'deletion.receipts' ORDER BY seq"
    )
    data = [json.loads(r["value"])["data"] for r in rows]
    return [d for d in data if d["request_id"] == str(request_id)]


async def test_a_retry_of_a_done_erasure_erases_again_and_mails_nothing(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """The verifier found a row written for the subject after the erasure (a late
    notice), the request escalated, an operator retried it: the same command again. The
    answer must state this pass, not re-send the first pass's counts while the row
    stays."""
    uid = uuid.uuid4()
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=uid)
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, await sealed_contact(vault, uid, ADDRESS))
        await handlers.start_erasure(conn, vault, command)
        # A repeated command while the email still waits is left to finish.
        await handlers.start_erasure(conn, vault, command)
    assert await _receipts(pool, command.request_id) == []
    assert len([w for w in await send_all(pool, vault, {}) if w.recipient == ADDRESS]) == 1
    [first] = await _receipts(pool, command.request_id)

    late = uuid.uuid4()
    await pool.execute(
        "INSERT INTO inbox_items (user_id, notice_id, pinned) VALUES ($1, $2, true)", uid, late
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.start_erasure(conn, vault, command)
    assert await send_all(pool, vault, {}) == []  # no second "your data was deleted"
    assert await pool.fetchval("SELECT count(*) FROM inbox_items WHERE user_id = $1", uid) == 0
    [_, again] = await _receipts(pool, command.request_id)
    assert first["erased"] != again["erased"]
    assert again["erased"]["inbox_items"] == 1  # type: ignore[index]


@pytest.mark.promise("P-16")
async def test_an_erasure_command_days_behind_its_tombstone_still_gets_its_email(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """Accounts tombstoned the card; the notifier's erasure command came days later (its
    consumer group stalled, or an operator's retry after the store timeout): the sweep
    kept the address for that one email. A tombstoned contact no command came for in a
    week is dropped."""
    late, never = uuid.uuid4(), uuid.uuid4()
    addresses = {late: ADDRESS, never: "never@example.org"}
    async with pool.acquire() as conn, conn.transaction():
        for uid, address in addresses.items():
            await store.upsert_contact(conn, await sealed_contact(vault, uid, address))
            await store.erase_contact_on_tombstone(conn, uid)  # the tombstone comes first
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE contacts SET updated_at = now() - interval '4 days' WHERE user_id = $1", late
        )
        await conn.execute(
            "UPDATE contacts SET updated_at = now() - interval '8 days' WHERE user_id = $1", never
        )
        await store.sweep_erased(conn)
        left = await conn.fetch(
            "SELECT user_id FROM contacts WHERE user_id = ANY($1)", [*addresses]
        )
        assert [r["user_id"] for r in left] == [late]

    command = EraseSubject(request_id=uuid.uuid4(), subject_id=late)
    async with pool.acquire() as conn, conn.transaction():
        await handlers.start_erasure(conn, vault, command)
    mailed = [w for w in await send_all(pool, vault, {}) if w.recipient in addresses.values()]
    assert [w.recipient for w in mailed] == [ADDRESS]
    state = await pool.fetchval(
        "SELECT state FROM erasures WHERE request_id = $1", command.request_id
    )
    assert state == "done"
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE user_id = $1", late) == 0
