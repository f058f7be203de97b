"""What the notifier tests share: seeded contacts and deliveries, a capturing transport,
a live inbox that cannot hear."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from services.notifier import handlers, store
from services.notifier.config import NotifierSettings
from services.notifier.mailer import HandOver, PermanentFailure, TemporaryFailure, Wire
from services.notifier.sender import Sender, Wake
from shared.vault import Vault

USERS = 60


class Capture:
    """A transport that keeps what it is given; some recipients fail as told."""

    def __init__(self, box: list[Wire], failing: dict[str, int]) -> None:
        self._box = box
        self._failing = failing

    async def send(self, wire: Wire, hand_over: HandOver) -> None:
        code = self._failing.get(wire.recipient)
        if code is not None:
            failure = TemporaryFailure if code < 500 else PermanentFailure
            raise failure(f"recipient refused ([{code}])")
        await hand_over()
        await asyncio.sleep(0.001)  # a round trip, so the senders interleave
        self._box.append(wire)

    async def close(self) -> None:
        pass


async def sealed_contact(
    vault: Vault, uid: uuid.UUID, email: str, changed_at: datetime | None = None
) -> store.SealedContact:
    """A contact as the notifier stores it from an adult's card naming ``email``."""
    return store.SealedContact(
        user_id=uid,
        email_index=handlers.email_index(vault, email),
        email=await vault.seal(uid, email, purpose=handlers.EMAIL_PURPOSE),
        name=await vault.seal(uid, "Ada", purpose=handlers.NAME_PURPOSE),
        guardian_index=None,
        guardian_email=None,
        locale="en",
        age_band="adult",
        marketing_email=False,
        tracking_opt_out=False,
        active=True,
        card_changed_at=changed_at,
    )


def address(uid: uuid.UUID) -> str:
    return f"u-{uid.hex[:12]}@example.org"


async def seed(
    pool: asyncpg.Pool, vault: Vault, count: int = USERS
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    users = [uuid.uuid4() for _ in range(count)]
    records = [
        (
            u,
            handlers.email_index(vault, address(u)),
            await vault.seal(u, address(u), purpose=handlers.EMAIL_PURPOSE),
            await vault.seal(u, "Ada", purpose=handlers.NAME_PURPOSE),
            "adult",
        )
        for u in users
    ]
    notice = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "contacts",
            records=records,
            columns=["user_id", "email_index", "email", "name", "age_band"],
        )
        await conn.execute(
            "INSERT INTO suppressions (email_index, category, source) VALUES ($1, 'all', 'page')",
            handlers.email_index(vault, address(users[0])),
        )
        await conn.execute(
            "INSERT INTO notices (notice_id, template, category, audience, params, channels,"
            " source, status) VALUES ($1, 'request_reply', 'transactional', 'listed', $2,"
            " '{email}', 'test', 'fanned_out')",
            notice,
            {"request_id": "r-1"},
        )
        await conn.copy_records_to_table(
            "deliveries", records=[(notice, u) for u in users], columns=["notice_id", "user_id"]
        )
    return notice, users


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not settled in time"
        await asyncio.sleep(0.05)


async def send_all(pool: asyncpg.Pool, vault: Vault, failing: dict[str, int]) -> list[Wire]:
    """Run a Sender (one attempt per email) until every delivery is done or dead."""
    box: list[Wire] = []
    config = NotifierSettings(environment="test", notifier_max_attempts=1)
    sender = Sender(config, pool, vault, lambda: Capture(box, failing), Wake())
    task = asyncio.create_task(sender.run())

    async def settled() -> bool:
        left = await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE status NOT IN ('done', 'dead')"
        )
        return bool(left == 0)

    try:
        await until(settled)
    finally:
        sender.stop()
        await task
    return box


@contextlib.asynccontextmanager
async def listener_deaf(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The live inbox's listener lost, as when PostgreSQL restarts, and held back from
    listening again until the block ends: what is notified inside it is not heard."""
    gate = asyncio.Event()
    connect = asyncpg.connect

    async def held_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        await gate.wait()
        return await connect(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", held_connect)
    terminated = await pool.fetchval(f"SELECT count(pg_terminate_backend(pid)) {_LISTENING}")
    assert terminated == 1
    # A backend told to end may still deliver a notification: wait until it has gone.
    await until(lambda: _none_listening(pool), seconds=10)
    try:
        yield
    finally:
        gate.set()


_LISTENING = (
    "FROM pg_stat_activity WHERE datname = current_database()"
    f" AND query = 'LISTEN \"{store.INBOX_CHANNEL}\"'"  # not the vault's listener
)


async def _none_listening(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval(f"SELECT count(*) {_LISTENING}")
