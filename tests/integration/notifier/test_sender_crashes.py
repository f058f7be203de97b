"""No email twice, none lost: the sender killed at every window, and a lost SMTP reply.

The sender runs as a real process (``tests.support.sender_process``) on a scratch
notifier database and mails the local SMTP sink over STARTTLS. It dies, by the crash
points of shared.bus.faults, right after the server accepted a message (before the
outcome is recorded), then right after a hand-over mark committed (before DATA, so that
message never left); then it is killed from outside while sending. Leases are 2 s, so
every restart leases again what the dead process held.

Afterwards each delivery has exactly one message in the sink and is ``sent``, or is a
dead letter *in doubt* with at most one; no message is there twice. Replaying the in
doubt one that never arrived (what an operator does after reading the mail log) sends
it, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.notifier import mailer, store
from services.notifier.config import NotifierSettings
from services.notifier.mailer import SmtpTransport
from services.notifier.sender import HandOvers, Sender, Wake, lease_of, message_id
from shared.vault import Vault
from tests.integration.notifier.support import (
    address,
    sealed_contact,
    seed,
    send_all,
    until,
)
from tests.support.mailbox import Mailbox
from tests.support.processes import end

REPO = Path(__file__).resolve().parents[3]
USERS = 40
IN_DOUBT = "in doubt: "


class SenderProcess:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, crash_points: str = "") -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "IMT_ENVIRONMENT": "test",
            "IMT_LOG_LEVEL": "WARNING",
            "IMT_NOTIFIER_LEASE_SECONDS": "2",
            # Slow enough that a kill from outside lands while emails are going out.
            "IMT_NOTIFIER_SEND_RATE_PER_SECOND": "20",
            "IMT_CRASH_POINTS": crash_points,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sender_process", self.dsn], cwd=REPO, env=env
        )

    async def died(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the sender did not reach its crash point"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        end(self.proc)


async def deliveries(pool: asyncpg.Pool, notice: uuid.UUID) -> dict[uuid.UUID, Any]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, user_id, status, outcome, reason, handed_over_at, in_doubt FROM deliveries"
            " WHERE notice_id = $1",
            notice,
        )
    return {r["user_id"]: r for r in rows}


async def settled(pool: asyncpg.Pool, notice: uuid.UUID) -> bool:
    return all(r["status"] in ("done", "dead") for r in (await deliveries(pool, notice)).values())


async def copies(mailbox: Mailbox, users: list[uuid.UUID]) -> Counter[str]:
    """How many messages the sink holds per Message-ID, for these users."""
    messages = await mailbox.to(*(address(u) for u in users))
    return Counter(str(m["Message-ID"]) for m in messages)


@pytest.mark.promise("P-05")  # a reply's email: once, whatever the sender's crashes
async def test_sigkill_at_every_window_sends_no_email_twice_and_loses_none(
    pool: asyncpg.Pool, scratch_dsn: str
) -> None:
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    notice, users = await seed(pool, vault, count=USERS)  # users[0] opted out
    await vault.close()
    mailbox = Mailbox()
    sender = SenderProcess(scratch_dsn)
    try:
        sender.start("notifier.after_accepted:1")
        assert await sender.died() == -signal.SIGKILL
        sender.start("notifier.after_hand_over:1")
        assert await sender.died() == -signal.SIGKILL
        finished = await _finished(pool, notice)
        sender.start()
        # Killed from outside once it has recorded outcomes of its own, while sending.
        await until(lambda: _more_finished(pool, notice, finished), seconds=60)
        sender.kill()
        sender.start()
        await until(lambda: settled(pool, notice), seconds=90)
    finally:
        sender.stop()

    rows = await deliveries(pool, notice)
    counts = await copies(mailbox, users)
    assert all(n == 1 for n in counts.values()), f"sent twice: {counts}"
    assert (rows[users[0]]["status"], rows[users[0]]["outcome"]) == ("done", "suppressed")
    in_doubt = {u for u, r in rows.items() if r["status"] == "dead"}
    for u in users[1:]:
        row, present = rows[u], counts[_message_id(notice, u)]
        if u in in_doubt:
            assert row["reason"].startswith(IN_DOUBT), row["reason"]
            assert row["handed_over_at"] is not None
            assert row["in_doubt"]
        else:
            assert (row["status"], row["outcome"], present) == ("done", "sent", 1)
    # The first process died after the server took a message; the second before DATA.
    arrived = {u for u in in_doubt if counts[_message_id(notice, u)] == 1}
    missing = in_doubt - arrived
    assert arrived
    assert missing
    assert len(in_doubt) < USERS // 2  # the rest went out normally, once
    async with pool.acquire() as conn:
        outcomes = Counter(
            await conn.fetchval(
                "SELECT array_agg(convert_from(value, 'UTF8')::jsonb #>> '{data,user_id}')"
                " FROM bus_outbox"
            )
        )
    assert outcomes == Counter({str(u): 1 for u in users})  # one NoticeDelivered each

    # A replay of every dead letter leaves those in doubt out; the operator finds no
    # trace of the missing ones in the mail log and replays them by id.
    async with pool.acquire() as conn:
        assert (await store.ops_gauges(conn)).in_doubt == len(in_doubt)
        assert await store.replay_dead(conn) == 0
        replayed = await store.replay_dead(conn, delivery_ids=[rows[u]["id"] for u in missing])
    assert replayed == len(missing)
    await _send_until_settled(config, pool, await Vault.connect(config, pool), notice)
    counts = await copies(mailbox, users)
    await mailbox.close()
    assert counts == Counter({_message_id(notice, u): 1 for u in users[1:]})


async def test_a_reply_lost_after_data_leaves_the_email_in_doubt_not_sent_again(
    pool: asyncpg.Pool,
) -> None:
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    notice, users = await seed(pool, vault, count=3)  # users[0] opted out
    mailbox = Mailbox()
    await mailbox.set_mode("lose-reply")
    try:
        await _send_until_settled(config, pool, vault, notice)
    finally:
        await mailbox.set_mode("accept")
    rows = await deliveries(pool, notice)
    counts = await copies(mailbox, users)
    await mailbox.close()
    for u in users[1:]:
        assert (rows[u]["status"], rows[u]["in_doubt"]) == ("dead", True)
        assert rows[u]["reason"].startswith(f"{IN_DOUBT}SMTP connection lost during DATA")
    # The server kept each message although its answer never came: one copy, no retry.
    assert counts == Counter({_message_id(notice, u): 1 for u in users[1:]})


async def _send_until_settled(
    config: NotifierSettings, pool: asyncpg.Pool, vault: Vault, notice: uuid.UUID
) -> None:
    """A sender over SMTP (the sink) until every delivery of ``notice`` is done or dead;
    then the vault is closed."""
    sender = Sender(config, pool, vault, lambda: SmtpTransport(config), Wake())
    task = asyncio.create_task(sender.run())
    try:
        await until(lambda: settled(pool, notice), seconds=60)
    finally:
        sender.stop()
        await task
        await vault.close()


def _message_id(notice: uuid.UUID, user: uuid.UUID) -> str:
    return message_id({"notice_id": notice, "user_id": user})


async def _finished(pool: asyncpg.Pool, notice: uuid.UUID) -> int:
    rows = await deliveries(pool, notice)
    return sum(1 for r in rows.values() if r["status"] in ("done", "dead"))


async def _more_finished(pool: asyncpg.Pool, notice: uuid.UUID, before: int) -> bool:
    return await _finished(pool, notice) > before


async def test_only_the_holder_of_a_live_lease_can_hand_a_delivery_over(
    pool: asyncpg.Pool,
) -> None:
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    await seed(pool, vault, count=2)
    await vault.close()
    await pool.execute("DELETE FROM suppressions")  # leases alone are under test here
    marks = HandOvers(pool)
    async with pool.acquire() as conn:
        stalled = await store.claim_deliveries(conn, 2, 0.5)
    await asyncio.sleep(1.0)  # the first sender stalls past its lease...
    async with pool.acquire() as conn:
        taken = {r["id"]: r for r in await store.claim_deliveries(conn, 2, 600)}
    assert set(taken) == {r["id"] for r in stalled}  # ...and another one leased them
    for row in stalled:
        with pytest.raises(store.LeaseLost):
            await marks.mark(lease_of(row))
    # The new holder hands both over; a second hand-over of one is refused.
    first, second = taken.values()
    await asyncio.gather(*(marks.mark(lease_of(r)) for r in (first, second)))
    with pytest.raises(store.LeaseLost):
        await marks.mark(lease_of(first))
    rows = await deliveries(pool, first["notice_id"])
    assert all(r["handed_over_at"] is not None for r in rows.values())


async def test_a_row_leased_twice_by_one_process_hands_over_under_its_new_lease_only(
    pool: asyncpg.Pool,
) -> None:
    """A job queued until its lease ran out, and the same row leased again by the same
    process: both jobs ask for the mark in one round. Only the new lease may send."""
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    await seed(pool, vault, count=1)
    await vault.close()
    await pool.execute("DELETE FROM suppressions")  # leases alone are under test here
    async with pool.acquire() as conn:
        (stale,) = await store.claim_deliveries(conn, 1, 0.5)
    await asyncio.sleep(1.0)
    async with pool.acquire() as conn:
        (fresh,) = await store.claim_deliveries(conn, 1, 600)
    assert fresh["id"] == stale["id"]
    marks = HandOvers(pool)
    results = await asyncio.gather(
        marks.mark(lease_of(stale)), marks.mark(lease_of(fresh)), return_exceptions=True
    )
    assert isinstance(results[0], store.LeaseLost)
    assert results[1] is None


async def test_a_lease_about_to_end_is_not_handed_over(pool: asyncpg.Pool) -> None:
    """Its MAIL, RCPT and DATA could outlast it, leaving a marked row whose lease ended:
    a dead letter in doubt, though the email may never have left. Refused, it is leased
    again once the lease ends, and sent then."""
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    notice, _ = await seed(pool, vault, count=1)
    await vault.close()
    await pool.execute("DELETE FROM suppressions")  # leases alone are under test here
    async with pool.acquire() as conn:
        (row,) = await store.claim_deliveries(conn, 1, 20)
    with pytest.raises(store.LeaseLost):
        await HandOvers(pool, margin_seconds=30).mark(lease_of(row))
    assert all(r["handed_over_at"] is None for r in (await deliveries(pool, notice)).values())
    await HandOvers(pool, margin_seconds=5).mark(lease_of(row))


@pytest.mark.promise("P-32")
async def test_an_unsubscribe_after_the_lease_stops_the_email_at_its_hand_over(
    pool: asyncpg.Pool,
) -> None:
    """Suppressions are decided when a delivery is leased; one that comes while its email
    waits to be sent (a slow SMTP server ahead of it) stops it at the hand-over mark,
    before anything reaches SMTP. The next lease records it as suppressed."""
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    notice, users = await seed(pool, vault, count=3)  # users[0]: all email suppressed
    marks = HandOvers(pool)
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM suppressions")  # not yet, at the lease
        # Long enough that no lease runs out by itself before the marks below.
        leased = {r["user_id"]: r for r in await store.claim_deliveries(conn, 3, 30)}
        assert set(leased) == set(users)
        opted_out, unsubscribed, other = (leased[u] for u in users)
        await store.suppress(conn, opted_out["address_index"], "all", "page")
        await store.suppress(conn, unsubscribed["address_index"], "transactional", "one_click")
        await store.suppress(conn, other["address_index"], "marketing", "one_click")
    for row in (opted_out, unsubscribed):
        with pytest.raises(store.LeaseLost):
            await marks.mark(lease_of(row))
    await marks.mark(lease_of(other))  # another category's opt-out stops nothing here
    rows = await deliveries(pool, notice)
    assert [rows[u]["handed_over_at"] is None for u in users] == [True, True, False]

    # The leases end (as they would once their time ran out), so the deliveries are due.
    await pool.execute(
        "UPDATE deliveries SET next_attempt_at = now() WHERE notice_id = $1 AND status = 'sending'",
        notice,
    )
    box = await send_all(pool, vault, failing={})
    await vault.close()
    rows = await deliveries(pool, notice)
    for user in users[:2]:
        assert (rows[user]["status"], rows[user]["outcome"]) == ("done", "suppressed")
    assert {w.recipient for w in box} & {address(u) for u in users[:2]} == set()


# What a card may say after a campaign's email was leased (or a tombstone: the erasure
# began), and the outcome its next lease records.
_CARDS_AFTER_THE_LEASE: list[tuple[dict[str, Any], str, str | None]] = [
    ({"marketing_email": False}, "suppressed", "no consent to marketing email"),
    ({"tracking_opt_out": True}, "suppressed", "tracking opt-out: no advertising (P-25)"),
    ({"age_band": "under_13"}, "suppressed", "under 13: never marketed to (P-26)"),
    ({"age_band": "unknown"}, "suppressed", "age unknown: no marketing until known"),
    ({"active": False}, "suppressed", "inactive account"),
    ({"erase_pending": True}, "failed", "the subject was erased"),
]


@pytest.mark.promise("P-32")
async def test_an_opt_out_in_the_account_after_the_lease_stops_a_campaign_at_its_hand_over(
    pool: asyncpg.Pool,
) -> None:
    """An opt-out made in the account comes as a contact card, not a suppression: one
    that lands while a campaign's email waits to be sent (leased, decided, queued) stops
    it at the hand-over mark too, as does any card that rules marketing out. A card
    stops no email of another category: those are not the account's marketing choice."""
    vault = await Vault.connect(NotifierSettings(environment="test"), pool)
    try:  # its listening connection open, the pool's close would wait forever
        users, leased = await _campaign_leased_then_cards_changed(pool, vault)
        mailed = {(r["category"], r["user_id"]): r for r in leased}
        assert len(mailed) == len(users) + 1
        marks = HandOvers(pool)
        for user in users[:-1]:
            with pytest.raises(store.LeaseLost):
                await marks.mark(lease_of(mailed["marketing", user]))
        await marks.mark(lease_of(mailed["marketing", users[-1]]))
        await marks.mark(lease_of(mailed["transactional", users[0]]))  # the opted-out's reply

        # The leases end (as they would once their time ran out): the deliveries are due.
        await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'sending'")
        box = await send_all(pool, vault, failing={})
    finally:
        await vault.close()
    campaign = mailed["marketing", users[-1]]["notice_id"]
    rows = await deliveries(pool, campaign)
    for user, (_, outcome, reason) in zip(users[:-1], _CARDS_AFTER_THE_LEASE, strict=True):
        assert (rows[user]["status"], rows[user]["outcome"], rows[user]["reason"]) == (
            "done",
            outcome,
            reason,
        )
    assert {w.recipient for w in box} & {address(u) for u in users[:-1]} == set()


async def _campaign_leased_then_cards_changed(
    pool: asyncpg.Pool, vault: Vault
) -> tuple[list[uuid.UUID], list[Any]]:
    """Consenting adults, a campaign to each and a reply to the first, all leased; then
    each user's card but the last changes as _CARDS_AFTER_THE_LEASE says. Returns the
    users and the leased rows."""
    users = [uuid.uuid4() for _ in range(len(_CARDS_AFTER_THE_LEASE) + 1)]
    cards = [
        dataclasses.replace(await sealed_contact(vault, u, address(u)), marketing_email=True)
        for u in users
    ]
    campaign, reply = uuid.uuid4(), uuid.uuid4()
    params = {"subject": "Screen week", "headline": "Screens", "message": "Repaired today."}
    async with pool.acquire() as conn:
        for card in cards:
            await store.upsert_contact(conn, card)
        for notice, template, category, values in (
            (campaign, "marketing_newsletter", "marketing", params),
            (reply, "request_reply", "transactional", {"request_id": "r-1"}),
        ):
            await conn.execute(
                "INSERT INTO notices (notice_id, template, category, audience, params, channels,"
                " source, status) VALUES ($1, $2, $3, 'listed', $4, '{email}', 'test',"
                " 'fanned_out')",
                notice, template, category, values,
            )  # fmt: skip
        await conn.copy_records_to_table(
            "deliveries",
            records=[(campaign, u) for u in users] + [(reply, users[0])],
            columns=["notice_id", "user_id"],
        )
        # Long enough that no lease runs out by itself before the marks.
        leased = await store.claim_deliveries(conn, len(users) + 1, 30)
        for card, (change, _, _) in zip(cards[:-1], _CARDS_AFTER_THE_LEASE, strict=True):
            if change.get("erase_pending"):  # as a tombstone does while the erasure confirms
                await conn.execute(
                    "UPDATE contacts SET erase_pending = true WHERE user_id = $1", card.user_id
                )
            else:
                await store.upsert_contact(conn, dataclasses.replace(card, **change))
    return users, list(leased)


async def test_an_unexpected_error_before_data_retries_the_email_once_marked(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug between the hand-over mark and DATA (here, in MAIL/RCPT): the message never
    left, so the email is retried and sent once, not left in doubt."""
    config = NotifierSettings(environment="test", notifier_smtp_connections=1,
                              notifier_retry_base_seconds=0.2,
                              notifier_retry_max_seconds=0.5)  # fmt: skip
    vault = await Vault.connect(config, pool)
    notice, users = await seed(pool, vault, count=2)  # users[0] opted out
    envelope = mailer._envelope
    failed: list[str] = []

    async def failing_once(client: Any, wire: Any) -> None:
        if not failed:
            await asyncio.sleep(0.5)  # the hand-over mark commits meanwhile
            failed.append(wire.recipient)
            raise KeyError("a bug in the envelope")
        await envelope(client, wire)

    monkeypatch.setattr(mailer, "_envelope", failing_once)
    mailbox = Mailbox()
    await _send_until_settled(config, pool, vault, notice)
    row = (await deliveries(pool, notice))[users[1]]
    counts = await copies(mailbox, users)
    await mailbox.close()
    assert failed == [address(users[1])]
    assert (row["status"], row["in_doubt"]) == ("done", False)
    assert counts == Counter({_message_id(notice, users[1]): 1})
