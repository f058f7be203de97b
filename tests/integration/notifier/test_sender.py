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
from services.notifier.mailer import HandOver, Wire
from services.notifier.sender import Sender, Wake, message_id, record, result_of
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
    user_of = {address(u): u for u in users}
    for w in box:  # the idempotency key's, without the user's id
        mid = message_id({"notice_id": notice, "user_id": user_of[w.recipient]})
        assert b"Message-ID: " + mid.encode() in w.data
        assert str(user_of[w.recipient]).encode() not in w.data

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
    notice = _verification(uid, card_changed_at=changed_at)
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
        # It waits for its card: not leased again and again while the old card is there.
        await asyncio.sleep(1.5)
        row = await pool.fetchrow(
            "SELECT status, next_attempt_at > now() + interval '5 seconds' AS later"
            " FROM deliveries WHERE user_id = $1",
            uid,
        )
        assert row is not None
        assert (row["status"], row["later"]) == ("pending", True)

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


async def test_a_card_committed_while_its_email_was_leased_sends_the_email_at_once(
    pool: asyncpg.Pool,
) -> None:
    """A contacts batch commits the card after the sender leased the email (nothing to
    wake then) and before it recorded the wait (whose statement could not see the card):
    the email goes within seconds, not after its wait (a sign-up's verification mail)."""
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    uid = uuid.uuid4()
    notice = _verification(uid)
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)
    async with pool.acquire() as conn:
        (row,) = await store.claim_deliveries(conn, 10, 60.0)
    assert not row["has_contact"]
    contact = await sealed_contact(vault, uid, "late-card@example.org", datetime.now(UTC))
    async with pool.acquire() as cards:
        batch = cards.transaction()
        await batch.start()
        await store.upsert_contact(cards, contact)
        waited = result_of(row, "pending", reason="waiting for the contact card", delay=300.0,
                           waiting=True)  # fmt: skip
        await record(pool, [waited])  # committed first, so it cannot see the card
        await batch.commit()
    box: list[Wire] = []
    sender = Sender(config, pool, vault, lambda: Capture(box, {}), Wake())
    task = asyncio.create_task(sender.run())
    try:
        await until(lambda: _settled_for(pool, uid), seconds=15.0)
    finally:
        sender.stop()
        await task
        await vault.close()
    assert [w.recipient for w in box] == ["late-card@example.org"]


def _verification(uid: uuid.UUID, card_changed_at: datetime | None = None) -> store.Notice:
    """An address's verification link for ``uid`` (sent once its card, as new as
    ``card_changed_at``, is there)."""
    return store.Notice(
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
        card_changed_at=card_changed_at,
    )


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


class _Faulty(Capture):
    """A transport with a bug for two recipients, once each: one before the hand-over,
    one after it (the message may have gone)."""

    def __init__(self, box: list[Wire], before: str, after: str, hit: set[str]) -> None:
        super().__init__(box, {})
        self._before, self._after, self._hit = before, after, hit

    async def send(self, wire: Wire, hand_over: HandOver) -> None:
        first = wire.recipient not in self._hit
        self._hit.add(wire.recipient)
        if first and wire.recipient == self._before:
            raise ValueError("a bug before the hand-over")
        if first and wire.recipient == self._after:
            await hand_over()
            raise ValueError("a bug after the hand-over")
        await super().send(wire, hand_over)


async def test_an_unexpected_error_retries_the_email_or_leaves_it_in_doubt_and_sending_goes_on(
    pool: asyncpg.Pool,
) -> None:
    """A fault no rule foresaw (a bug) stops neither the connection nor the worker: the
    email is retried if it was not handed over, and is a dead letter in doubt if it was
    (never sent twice)."""
    config = NotifierSettings(environment="test", notifier_smtp_connections=1,
                              notifier_retry_base_seconds=0.2,
                              notifier_retry_max_seconds=0.5)  # fmt: skip
    vault = await Vault.connect(config, pool)
    _, users = await seed(pool, vault, count=6)  # users[0] opted out of everything
    before, after = address(users[1]), address(users[2])
    box: list[Wire] = []
    hit: set[str] = set()
    sender = Sender(config, pool, vault, lambda: _Faulty(box, before, after, hit), Wake())
    task = asyncio.create_task(sender.run())
    try:

        async def settled() -> bool:
            statuses = await pool.fetch("SELECT status FROM deliveries")
            return all(r["status"] in ("done", "dead") for r in statuses)

        await until(settled)
        assert not task.done()  # the sender lived through both faults
    finally:
        sender.stop()
        await task
        await vault.close()
    rows = {
        r["user_id"]: r
        for r in await pool.fetch(
            "SELECT user_id, status, outcome, reason, attempts, in_doubt FROM deliveries"
        )
    }
    retried, doubtful = rows[users[1]], rows[users[2]]
    assert (retried["status"], retried["outcome"], retried["attempts"]) == ("done", "sent", 2)
    assert (doubtful["status"], doubtful["in_doubt"]) == ("dead", True)
    assert doubtful["reason"].startswith("in doubt: unexpected error: ValueError")
    mailed = Counter(w.recipient for w in box)
    assert mailed == Counter({address(u): 1 for u in users if u not in (users[0], users[2])})


async def test_a_stalled_senders_late_outcome_does_not_reopen_another_senders_lease(
    pool: asyncpg.Pool,
) -> None:
    """A sender stalls past its lease and another one leases the delivery (and may be
    mailing it). The first one's late "retry later" must not put the delivery back to
    pending (it would be mailed again), nor publish an outcome of its own."""
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    await seed(pool, vault, count=2)
    await vault.close()
    async with pool.acquire() as conn:
        stalled = await store.claim_deliveries(conn, 2, 0.5)
    await asyncio.sleep(1.0)
    async with pool.acquire() as conn:
        taken = {r["id"]: r for r in await store.claim_deliveries(conn, 2, 600)}
    assert set(taken) == {r["id"] for r in stalled}
    late = [
        result_of(stalled[0], "pending", attempted=True),
        result_of(stalled[1], "done", outcome="sent", attempted=True),
    ]
    await record(pool, late)
    rows = {
        r["id"]: r for r in await pool.fetch("SELECT id, status, next_attempt_at FROM deliveries")
    }
    for row in taken.values():  # still the new holder's, lease and all
        assert (rows[row["id"]]["status"], rows[row["id"]]["next_attempt_at"]) == (
            "sending", row["lease_until"]
        )  # fmt: skip
    assert await pool.fetchval("SELECT count(*) FROM bus_outbox") == 0
    # The holder's own outcomes are recorded, with their events.
    await record(
        pool, [result_of(r, "done", outcome="sent", attempted=True) for r in taken.values()]
    )
    statuses = await pool.fetch("SELECT status, outcome FROM deliveries")
    assert {(r["status"], r["outcome"]) for r in statuses} == {("done", "sent")}
    assert await pool.fetchval("SELECT count(*) FROM bus_outbox") == 2
