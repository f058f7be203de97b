"""A new privacy-policy version, published by an operator in accounts, reaches every
active account once, as accounts itself knows them (P-06, P-23).

The notifier's own fan-out tests give it contact cards the test made up, and check the
notifier against itself. Here the accounts are real (signed up through the gateway):
three verified, one whose address is not verified yet (not active), one erased. The
active ones are read from the accounts database; each must have its contact card in
the notifier, exactly one inbox item and one email of the policy notice, and the record
of the version it was shown. The erased one has nothing, the inactive one nothing until
it verifies its address: then it gets the notice it missed, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest

from services.notifier.handlers import policy_notice_id
from shared.config import PlatformSettings
from tests.e2e.accounts.support import (
    BusTail,
    active_user,
    admin,
    erase_subject,
    publish_policy,
    sign_up,
    start_tail,
    verify,
)
from tests.e2e.platform.journeys import needs
from tests.support.mailbox import eventually

VERIFIED = 3


@pytest.fixture
async def bus(settings: PlatformSettings) -> AsyncIterator[BusTail]:
    tail = await start_tail(settings)
    yield tail
    assert tail.task is not None
    tail.task.cancel()
    await tail.consumer.stop()


async def _fetch(
    settings: PlatformSettings, database: str, sql: str, *args: object
) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(settings.database_dsn(database))
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def _active_in_accounts(settings: PlatformSettings, ids: Sequence[str]) -> set[str]:
    rows = await _fetch(
        settings, "accounts", "SELECT id FROM users WHERE id = ANY($1::uuid[]) AND active", ids
    )
    return {str(r["id"]) for r in rows}


async def _contacts(settings: PlatformSettings, ids: Sequence[str]) -> dict[str, bool]:
    """The notifier's contact of each of ``ids`` it holds: whether it is active."""
    rows = await _fetch(
        settings,
        "notifier",
        "SELECT user_id, active AND NOT erase_pending AS active FROM contacts"
        " WHERE user_id = ANY($1::uuid[])",
        ids,
    )
    return {str(r["user_id"]): r["active"] for r in rows}


async def _told(
    settings: PlatformSettings, ids: Sequence[str], version: str
) -> dict[str, list[str]]:
    """Per user of ``ids``: the policy notice's inbox items, email deliveries and
    records of the version shown (every row, not one per key: a double shows)."""
    notice = policy_notice_id(version)
    told: dict[str, list[str]] = {i: [] for i in ids}
    for what, sql, arg in (
        ("inbox", "SELECT user_id FROM inbox_items WHERE notice_id = $2", notice),
        ("email", "SELECT user_id FROM deliveries WHERE notice_id = $2 AND channel = 'email'",
         notice),
        ("shown", "SELECT user_id FROM policy_notices WHERE policy_version = $2", version),
    ):  # fmt: skip
        rows = await _fetch(settings, "notifier", f"{sql} AND user_id = ANY($1::uuid[])", ids, arg)
        for r in rows:
            told[str(r["user_id"])].append(what)
    return {i: sorted(t) for i, t in told.items()}


ONCE = ["email", "inbox", "shown"]


@pytest.mark.promise("P-06")
@pytest.mark.promise("P-23")
async def test_a_new_policy_reaches_each_active_account_once_and_no_erased_one(
    platform: str, settings: PlatformSettings, bus: BusTail
) -> None:
    needs("accounts", "notifier")
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        verified = [(await active_user(client, bus)).id for _ in range(VERIFIED)]
        waiting = await sign_up(client)  # its address not verified yet: not active
        erased = await active_user(client, bus)
        # Erased as the deletion service has every store erase an account (its command,
        # without the grace period before it): accounts and the notifier both answer.
        await erase_subject(settings, bus, erased.id, retain=())
        await bus.wait_for(
            lambda r: r.topic == "deletion.receipts" and r.key == erased.id
            and r.value is not None and r.value["data"]["store"] == "notifier",
            timeout=60,
        )  # fmt: skip
        mine = [*verified, waiting.id, erased.id]
        # The notifier holds the cards of all but the erased one before the publication
        # (the waiting one's too, inactive: its verification link went by email).
        await eventually(
            lambda: _contacts(settings, mine),
            lambda c: c == {**dict.fromkeys(verified, True), waiting.id: False},
        )
        # Accounts says which of them are active: the verified ones, exactly.
        assert await _active_in_accounts(settings, mine) == set(verified)

        version = await publish_policy(client, await admin(client), "Visit logs kept 30 days.")
        told = await eventually(
            lambda: _told(settings, mine, version),
            lambda t: all(t[u] == ONCE for u in verified),
        )
        await asyncio.sleep(2.0)  # a second item or email, or a late one, would show by now
        told = await _told(settings, mine, version)
        assert told == {**{u: ONCE for u in verified}, waiting.id: [], erased.id: []}
        # Each active account's contact is the notifier's; the erased one's is gone.
        assert await _contacts(settings, mine) == {**dict.fromkeys(verified, True),
                                                   waiting.id: False}  # fmt: skip

        # Once its address is verified the account is active, and the notice it missed
        # comes to it, once, as it came to the others.
        await verify(client, bus, waiting)
        assert await _active_in_accounts(settings, mine) == {*verified, waiting.id}
        await eventually(
            lambda: _told(settings, [waiting.id], version),
            lambda t: t[waiting.id] == ONCE,
        )
        await asyncio.sleep(2.0)
        assert await _told(settings, mine, version) == {
            **{u: ONCE for u in [*verified, waiting.id]},
            erased.id: [],
        }
