"""Whether the process that made a copy of a backup is still at work on it (P-16).

A scratch copy (``verify_...``) or a restore under way (``restoring_...``) holds a
snapshot's personal data, erased subjects too. Its name cannot tell one a killed process
left behind from one another process is filling or scanning right now, and neither can
its age: a big restore takes as long as it takes, and a copy left behind must not wait
an hour for anyone to search or drop it. So the process that makes a copy holds a
session advisory lock for its name from before ``CREATE DATABASE`` until it has dropped
or renamed the copy. A killed process's session ends, and its locks with it: a copy
whose lock anyone can take is abandoned, at any age.

Advisory locks are per database: every side takes them in the maintenance database
``postgres``. The two-key form with :data:`LOCK_CLASS` keeps them apart from every other
advisory lock (the others use the one-key form, which PostgreSQL keeps apart anyway).

The lock is only as alive as its session, which sits idle through pg_restore and the
scan, for hours maybe. So the owner's session sets its own timeouts (:data:`SESSION`):
no ``idle_session_timeout`` a server or role may set ends it (its lock would go with it,
silently, and the copy be dropped mid-scan or searched before its replay), and TCP
keepalives short enough that a dead owner's host or a cut network frees the lock within
a minute or two, not after the kernel's two hours. Needs PostgreSQL 14 or later.
"""

from __future__ import annotations

from types import TracebackType

import asyncpg

from services.deletion.config import DeletionSettings
from shared.db import Connection

LOCK_CLASS = 0x0DE1_C0B1  # "deletion copy": the first key of every copy's lock
_KEY = "$1::int4, hashtext($2)"  # a hash collision only makes a copy look owned a while

# Set for the owner's session at its start (startup parameters: above any server, database
# or role default). Keepalives: after 30 s without a word from the owner, a probe every 10 s,
# the session ended at the 3rd unanswered one or 60 s without an acknowledgement (over TCP;
# a Unix socket ignores them, and does not outlive its process).
SESSION = {
    "idle_session_timeout": "0",  # idle is what an owner is, for hours
    "idle_in_transaction_session_timeout": "0",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "60000",  # milliseconds (PostgreSQL 12+)
}


class CopyOwner:
    """Makes copies and holds, for each, the lock saying its maker is alive, on one
    session of its own. ``async with``: leaving it (an exception, a cancellation) closes
    the session, so every lock goes; nothing else releases them before. Drop or rename
    the copies first: left behind, they are abandoned, and dropped or searched as such.
    """

    def __init__(self, settings: DeletionSettings) -> None:
        self._settings = settings
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> CopyOwner:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()  # aborts the socket if it cannot close cleanly: locks go

    async def create(self, name: str) -> None:
        """Lock ``name``, then create it: there is no moment it exists unlocked. Waits if
        the lock is held (a hash collision, or a cleanup holding it while it drops).
        Names are quoted as they are: the caller checks them."""
        conn = await self._session()
        await conn.execute(f"SELECT pg_advisory_lock({_KEY})", LOCK_CLASS, name)
        await conn.execute(f'CREATE DATABASE "{name}"')

    async def rename(self, old: str, new: str) -> None:
        """Rename a copy this owner made. On the locking session itself: had that session
        ended meanwhile (its lock gone, the copy maybe dropped as abandoned), this fails
        rather than hand over a copy nobody vouched for all along."""
        conn = self._conn
        if conn is None:  # never a fresh session: it would vouch for nothing
            raise RuntimeError(f"{old} was not made by this owner")
        await conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
        await conn.execute(f"SELECT pg_advisory_unlock({_KEY})", LOCK_CLASS, old)

    async def _session(self) -> asyncpg.Connection:
        # Opened at the first copy: an owner that makes none holds no connection.
        if self._conn is None:
            self._conn = await asyncpg.connect(
                self._settings.admin_dsn("postgres"), server_settings=SESSION
            )
        return self._conn


async def try_claim(conn: Connection, name: str) -> bool:
    """Take ``name``'s lock if no one holds it (then the copy is abandoned: its maker is
    gone or done with it); ``conn`` must be a session in ``postgres``."""
    return bool(await conn.fetchval(f"SELECT pg_try_advisory_lock({_KEY})", LOCK_CLASS, name))


async def release(conn: Connection, name: str) -> None:
    await conn.execute(f"SELECT pg_advisory_unlock({_KEY})", LOCK_CLASS, name)
