"""An internationalised address is mailed (SMTPUTF8) through the real SMTP sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid

import asyncpg

from services.notifier import handlers
from services.notifier.config import NotifierSettings
from services.notifier.mailer import SmtpTransport
from services.notifier.sender import Sender, Wake
from shared.vault import Vault
from tests.integration.notifier.support import seed, until
from tests.support.mailbox import Mailbox


async def test_an_internationalised_address_gets_its_email(pool: asyncpg.Pool) -> None:
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    notice, users = await seed(pool, vault, count=2)  # users[0] opted out
    user, to = users[1], f"josé.{uuid.uuid4().hex[:8]}@exämple.org"
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE contacts SET email = $2, email_index = $3 WHERE user_id = $1",
            user,
            await vault.seal(user, to, purpose=handlers.EMAIL_PURPOSE),
            handlers.email_index(vault, to),
        )
    sender = Sender(config, pool, vault, lambda: SmtpTransport(config), Wake())
    task = asyncio.create_task(sender.run())

    async def sent() -> bool:
        status = await pool.fetchval(
            "SELECT status || '/' || coalesce(outcome, '') FROM deliveries"
            " WHERE notice_id = $1 AND user_id = $2",
            notice,
            user,
        )
        return bool(status in ("done/sent", "dead/failed", "dead/refused"))

    try:
        await until(sent, seconds=60)
    finally:
        sender.stop()
        await task
        await vault.close()
    row = await pool.fetchrow(
        "SELECT status, outcome, reason FROM deliveries WHERE notice_id = $1 AND user_id = $2",
        notice,
        user,
    )
    assert row is not None
    assert (row["status"], row["outcome"]) == ("done", "sent"), row["reason"]
    mailbox = Mailbox()
    try:
        (raw,) = await mailbox.raw_to(to)
    finally:
        await mailbox.close()
    message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == to
