"""The Message-ID an email went out under is the one operators are shown for its dead
letter (``GET ops/dead-letters``), and the one it goes out under again when replayed; it
holds no user id. The real Sender on PostgreSQL, with a capturing transport."""

from __future__ import annotations

import email
from types import SimpleNamespace
from typing import Any

import asyncpg

from services.notifier import store
from services.notifier.mailer import Wire
from services.notifier.routes.ops import dead_letters
from shared.vault import Vault
from tests.integration.notifier.support import address, seed, send_all


def _message_ids(wires: list[Wire]) -> dict[str, str]:
    """Recipient -> the Message-ID of the email it was sent."""
    return {w.recipient: str(email.message_from_bytes(w.data)["Message-ID"]) for w in wires}


async def test_operators_are_shown_the_message_id_the_email_went_out_under(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    _, users = await seed(pool, vault, count=4)  # the first one's address is suppressed
    sent = _message_ids(await send_all(pool, vault, {address(users[2]): 550}))
    assert set(sent) == {address(users[1]), address(users[3])}
    assert len(set(sent.values())) == 2
    for user in users:
        assert all(str(user) not in mid and user.hex not in mid for mid in sent.values())

    # The worker died after handing one over: in doubt, a dead letter operators settle
    # by looking its Message-ID up in the mail server's log.
    await pool.execute(
        "UPDATE deliveries SET status = 'dead', outcome = 'failed', in_doubt = true,"
        " reason = 'in doubt: test', finished_at = now() WHERE user_id = $1",
        users[1],
    )
    listed: list[dict[str, Any]] = await dead_letters(
        None,  # type: ignore[arg-type]  # the operator's claims: unused
        SimpleNamespace(pool=pool),  # type: ignore[arg-type]
        limit=100,
    )
    shown = {d["in_doubt"]: d["message_id"] for d in listed}
    assert shown[True] == sent[address(users[1])]
    assert all("user_id" not in d for d in listed)
    assert all(str(u) not in str(listed) for u in users)

    # Replayed (not in the server's log), it goes out under the same Message-ID; so does
    # the one refused before, once its cause is fixed.
    async with pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM deliveries WHERE status = 'dead'")]
        assert await store.replay_dead(conn, delivery_ids=ids) == 2
    again = _message_ids(await send_all(pool, vault, {}))
    assert again[address(users[1])] == sent[address(users[1])]
    assert set(again) == {address(users[1]), address(users[2])}
    assert again[address(users[2])] == shown[False]
