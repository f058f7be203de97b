"""A sign-up with an address an account has mails that account's owner: also when the
sign-up lost a race to the other one (real PostgreSQL and vault)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from services.accounts import store
from services.accounts.context import EMAIL_INDEX
from services.accounts.routes import auth
from shared.config import PlatformSettings
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.notifier import SendNotice
from shared.events.topics import NOTIFIER_COMMANDS
from shared.vault import Vault
from tests.integration.accounts.users import accounts_context, stored_user

ADDRESS = "owner@example.com"


async def _notices(pool: asyncpg.Pool, template: str) -> list[SendNotice]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", NOTIFIER_COMMANDS.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [e for e in events if isinstance(e, SendNotice) and e.template == template]


@pytest.mark.promise("P-08")
async def test_a_sign_up_that_lost_the_race_for_an_address_still_tells_its_owner(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sign-ups for a free address: both find it free, the other's insert wins. The
    loser's is the owner's, maybe: they must hear of the account made with it."""
    index = vault.blind_index(ADDRESS, purpose=EMAIL_INDEX)
    lookup = store.user_by_email_index
    looked: list[bytes] = []

    async def free_when_first_asked(conn: Any, asked: bytes) -> Any:
        looked.append(asked)
        if len(looked) == 1:  # the check, before the winner's insert committed
            async with pool.acquire() as other:
                await stored_user(other, email_index=index, active=False, email_verified=False)
            return None
        return await lookup(conn, asked)

    monkeypatch.setattr(store, "user_by_email_index", free_when_first_asked)
    body = auth.SignUp(name="The Owner", email=ADDRESS, password="owners-password-1")
    answer = await auth._register(
        accounts_context(settings, pool, vault), body, "adult", "$argon2id$hash"
    )

    winner = await pool.fetchval("SELECT id FROM users WHERE email_index = $1", index)
    assert answer.user_id != winner
    assert await pool.fetchval("SELECT count(*) FROM users") == 1
    [told] = await _notices(pool, "signup_attempted")
    assert list(told.user_ids) == [winner]
    assert told.params["account_state"] == "unconfirmed"
    assert await _notices(pool, "verify_email") == []  # nothing made for the loser
