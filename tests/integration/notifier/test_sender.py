"""The real Sender on PostgreSQL with a capturing transport: two workers, one table.

Every delivery is mailed once although two workers lease from the same table; an
address that opted out is not mailed; SMTP 4xx waits for a retry, 5xx is a dead
letter with the reason; every final outcome has its NoticeDelivered on the outbox.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifier import handlers, store
from services.notifier.config import NotifierSettings
from services.notifier.mailer import Wire
from services.notifier.sender import Sender, Wake
from shared.vault import Vault
from tests.integration.notifier.support import (
    USERS,
    Capture,
    address,
    sealed_contact,
    seed,
    until,
)


async def test_two_workers_mail_each_recipient_once(pool: asyncpg.Pool) -> None:
    # A retry far in the future: the check that it is still waiting must not race a slow run.
    config = NotifierSettings(
        environment="test",
        notifier_smtp_connections=3,
        notifier_retry_base_seconds=600.0,
        notifier_retry_max_seconds=1200.0,
    )
    setup = await Vault.connect(config, pool)
    notice, users = await seed(pool, setup)
    await setup.close()
    temporary, permanent = address(users[1]), address(users[2])
    box: list[Wire] = []
    failing = {temporary: 451, permanent: 550}
    vaults = [await Vault.connect(config, pool) for _ in range(2)]
    senders = [
        Sender(config, pool, vault, lambda: Capture(box, failing), Wake()) for vault in vaults
    ]
    tasks = [asyncio.create_task(s.run()) for s in senders]

    async def settled() -> bool:
        async with pool.acquire() as conn:
            open_ = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status = 'sending'"
                " OR (status = 'pending' AND attempts = 0)"
            )
        return bool(open_ == 0)

    try:
        await until(settled)
    finally:
        for s in senders:
            s.stop()
        await asyncio.gather(*tasks)
        for vault in vaults:
            await vault.close()

    mailed = Counter(w.recipient for w in box)
    expected = {address(u) for u in users[3:]}
    assert set(mailed) == expected  # not the opted-out address, not the failing ones
    assert set(mailed.values()) == {1}  # never twice, though two workers leased
    assert sum(s.sent for s in senders) == len(expected)
    assert all(b"Message-ID: <" + str(notice).encode() in w.data for w in box)

    async with pool.acquire() as conn:
        rows = {
            r["user_id"]: r
            for r in await conn.fetch(
                "SELECT user_id, status, outcome, reason, attempts,"
                " next_attempt_at > now() AS later FROM deliveries"
            )
        }
        events = [
            json.loads(v)["data"]
            for v in await conn.fetchval(
                "SELECT array_agg(convert_from(value, 'UTF8')) FROM bus_outbox"
            )
        ]
    assert (rows[users[0]]["status"], rows[users[0]]["outcome"]) == ("done", "suppressed")
    retry = rows[users[1]]
    assert (retry["status"], retry["attempts"], retry["later"]) == ("pending", 1, True)
    dead = rows[users[2]]
    assert (dead["status"], dead["outcome"]) == ("dead", "failed")
    assert "550" in dead["reason"]
    assert all(rows[u]["outcome"] == "sent" for u in users[3:])
    outcomes = Counter((e["user_id"], e["outcome"]) for e in events)
    assert set(outcomes.values()) == {1}
    assert len(outcomes) == USERS - 1  # every final outcome; the retry has none yet


async def test_a_notice_needing_a_newer_card_waits_for_it_and_mails_the_new_address(
    pool: asyncpg.Pool,
) -> None:
    """An email change: the verification link must reach the new address, although the
    command may be read before the card that carries it."""
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    uid, changed_at = uuid.uuid4(), datetime.now(UTC)
    old, new = "old-address@example.org", "new-address@example.org"

    async def card(email: str, at: datetime | None) -> None:
        async with pool.acquire() as conn:
            await store.upsert_contact(conn, await sealed_contact(vault, uid, email, at))

    await card(old, changed_at - timedelta(days=1))
    notice = store.Notice(
        notice_id=uuid.uuid4(),
        template="verify_email",
        category="transactional",
        audience="listed",
        user_ids=(uid,),
        params={"verify_url": "https://localhost:8443/verify-email#token=t"},
        channels=("email",),
        recipient="user",
        pinned=False,
        source="accounts",
        card_changed_at=changed_at,
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)
    box: list[Wire] = []
    sender = Sender(config, pool, vault, lambda: Capture(box, {}), Wake())
    task = asyncio.create_task(sender.run())
    try:

        async def waiting() -> bool:
            reason = await pool.fetchval("SELECT reason FROM deliveries WHERE user_id = $1", uid)
            return bool(reason == "waiting for the contact card")

        await until(waiting)
        assert box == []  # the old address never gets the link

        await card(new, changed_at)
        await until(lambda: _settled_for(pool, uid))
    finally:
        sender.stop()
        await task
        await vault.close()
    assert [w.recipient for w in box] == [new]
    assert b"verify-email" in box[0].data
    # The link works for whoever reads it: once its email went, it is kept nowhere.
    params = await pool.fetchval("SELECT params FROM notices WHERE notice_id = $1",
                                 notice.notice_id)  # fmt: skip
    assert "verify_url" not in params


async def _settled_for(pool: asyncpg.Pool, uid: uuid.UUID) -> bool:
    status = await pool.fetchval("SELECT status FROM deliveries WHERE user_id = $1", uid)
    return bool(status == "done")


async def test_an_outage_while_composing_is_waited_out_not_dead_lettered(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vault's database unreachable while an email is composed: the email waits and
    goes once it is back, instead of becoming a dead letter ("cannot render")."""
    config = NotifierSettings(environment="test", notifier_retry_base_seconds=0.2,
                              notifier_retry_max_seconds=0.5)  # fmt: skip
    vault = await Vault.connect(config, pool)
    _, users = await seed(pool, vault, count=2)  # users[0] opted out of everything
    opened = vault.open
    down = True

    async def flaky_open(*args: object, **kwargs: object) -> str:
        if down:
            raise ConnectionRefusedError("vault database unreachable")
        return await opened(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vault, "open", flaky_open)
    box: list[Wire] = []
    sender = Sender(config, pool, vault, lambda: Capture(box, {}), Wake())
    task = asyncio.create_task(sender.run())
    try:

        async def waiting() -> bool:
            row = await pool.fetchrow(
                "SELECT status, reason FROM deliveries WHERE user_id = $1", users[1]
            )
            return row is not None and (row["status"], row["reason"]) == (
                "pending", "outage while composing: ConnectionRefusedError"
            )  # fmt: skip

        await until(waiting)
        down = False
        await until(lambda: _settled_for(pool, users[1]))
    finally:
        sender.stop()
        await task
        await vault.close()
    assert [w.recipient for w in box] == [address(users[1])]
