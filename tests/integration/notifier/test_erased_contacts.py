"""A contact tombstoned while the erasure's own email still waits keeps its address for
that email only: no other notice is planned for it or mailed to it. The real handlers
and Sender on PostgreSQL, with a capturing transport."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.notifier import handlers, store
from services.notifier.config import NotifierSettings
from shared.events.catalogue.deletion import EraseSubject
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact, send_all

ADDRESS = "leaving@example.org"


@pytest.fixture
async def vault(pool: asyncpg.Pool) -> AsyncIterator[Vault]:
    opened = await Vault.connect(NotifierSettings(environment="test"), pool)
    yield opened
    await opened.close()


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
