"""The vault: a data key per subject, so that destroying one key erases every copy.

``seal``/``open`` encrypt personal fields with the subject's key; ``shred`` destroys the
key, after which ``open`` and ``seal`` for that subject fail with :class:`SubjectShredded`
in every process: unwrapped keys are cached briefly, and a shred is announced on the
vault database's ``vault_shredded`` channel so every vault drops its cached copy at once.
A vault that is not listening (its listening connection was lost) caches nothing until
it listens again: a shred it could not hear must not leave a key in its cache. A
connection that dies without a word (a dropped NAT entry, a fail-over) is found by
asking it now and then, and counts as lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterable
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.config import PlatformSettings
from shared.tracing import trace_id_var
from shared.vault import crypto
from shared.vault.keycache import KeyCache

log = logging.getLogger(__name__)

SHRED_CHANNEL = "vault_shredded"
Subject = UUID | str


class SubjectShredded(LookupError):
    """The subject's key was destroyed: its sealed data can never be read again."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"subject {subject} was erased: its data key is destroyed")
        self.subject = subject


class Vault:
    """Per-subject data keys in the vault database, wrapped by the master key."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        master_key: bytes,
        index_key: bytes,
        cache_seconds: float = 30.0,
        check_seconds: float = 15.0,
    ) -> None:
        if len(master_key) != crypto.KEY_BYTES:
            raise ValueError("the vault master key must be 32 bytes (base64 in configuration)")
        self._pool = pool
        self._master = master_key
        self._index_key = index_key
        self._cache = KeyCache(cache_seconds)
        self._listener: PoolConnectionProxy | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._check_seconds = check_seconds
        self._watch: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls, settings: PlatformSettings, pool: asyncpg.Pool, *, check_seconds: float = 15.0
    ) -> Vault:
        """A vault on ``pool`` (the vault database), listening for shreds (its listening
        connection asked every ``check_seconds`` whether it still answers)."""
        vault = cls(
            pool,
            base64.b64decode(settings.vault_master_key.get_secret_value()),
            settings.blind_index_key.get_secret_value().encode(),
            check_seconds=check_seconds,
        )
        await vault._listen()
        vault._watch = asyncio.get_running_loop().create_task(vault._watch_listener())
        return vault

    async def close(self) -> None:
        self._closed = True
        for task in (self._relisten, self._watch):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._relisten = self._watch = None
        listening, listener = self._listening(), self._listener
        self._listener = None
        self._cache.clear()
        if listening and listener is not None:
            listener.remove_termination_listener(self._on_listener_lost)
            await listener.remove_listener(SHRED_CHANNEL, self._on_shred)
            await self._pool.release(listener)

    async def seal(self, subject: Subject, plaintext: str, *, purpose: str) -> bytes:
        key = await self._data_key(str(subject), create=True)
        return crypto.seal_with(key, str(subject), purpose, plaintext)

    async def open(self, subject: Subject, sealed: bytes, *, purpose: str) -> str:
        key = await self._data_key(str(subject), create=False)
        return crypto.open_with(key, str(subject), purpose, sealed)

    async def prefetch(self, subjects: Iterable[Subject]) -> int:
        """Load the keys of ``subjects`` not cached yet in one query; return how many.

        For a batch (a sender's lease of deliveries): one round trip instead of one per
        subject. Shredded subjects are skipped (their ``open`` raises as ever), and
        nothing is kept unless the vault is listening for shreds or if one was seen
        meanwhile, exactly as for a single key.
        """
        if not self._listening():
            return 0
        wanted = list({str(s) for s in subjects if self._cache.get(str(s)) is None})
        if not wanted:
            return 0
        generation = self._cache.generation
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT subject_id, wrapped_key FROM subject_keys"
                " WHERE subject_id = ANY($1::text[]) AND wrapped_key IS NOT NULL",
                wanted,
            )
        if not self._listening():
            return 0
        for row in rows:
            sid = row["subject_id"]
            self._cache.put(
                sid, crypto.unwrap_key(self._master, sid, row["wrapped_key"]), generation
            )
        return len(rows)

    def blind_index(self, value: str, *, purpose: str) -> bytes:
        return crypto.blind_index(self._index_key, purpose, value)

    async def shred(self, subject: Subject) -> bool:
        """Destroy the subject's key; True if a key existed. Idempotent."""
        sid = str(subject)
        async with self._pool.acquire() as conn, conn.transaction():
            # One upsert: a subject with no key yet is marked too (nothing can be sealed
            # for it later), and a first seal racing this shred either commits its key
            # before (then shredded here) or finds the mark (ON CONFLICT keeps it).
            had_key = await conn.fetchval(
                "WITH before AS (SELECT wrapped_key IS NOT NULL AS had FROM subject_keys"
                " WHERE subject_id = $1)"
                " INSERT INTO subject_keys (subject_id, wrapped_key, shredded_at)"
                " VALUES ($1, NULL, now()) ON CONFLICT (subject_id) DO UPDATE SET"
                " wrapped_key = NULL,"
                " shredded_at = coalesce(subject_keys.shredded_at, EXCLUDED.shredded_at)"
                " RETURNING (SELECT had FROM before)",
                sid,
            )
            await conn.execute("SELECT pg_notify($1, $2)", SHRED_CHANNEL, sid)
        self._cache.forget(sid)
        return bool(had_key)

    async def is_shredded(self, subject: Subject) -> bool:
        async with self._pool.acquire() as conn:
            shredded = await conn.fetchval(
                "SELECT shredded_at IS NOT NULL FROM subject_keys WHERE subject_id = $1",
                str(subject),
            )
        return bool(shredded)

    async def _data_key(self, sid: str, *, create: bool) -> bytes:
        listening = self._listening()
        if listening:
            cached = self._cache.get(sid)
            if cached is not None:
                return cached
        generation = self._cache.generation
        key = await self._load_or_create(sid, create=create)
        if listening and self._listening():
            self._cache.put(sid, key, generation)  # kept out if a shred was seen meanwhile
        return key

    def _listening(self) -> bool:
        listener = self._listener
        if listener is None:
            return False
        try:
            return not listener.is_closed()
        except asyncpg.InterfaceError:  # lost, and already handed back to the pool
            return False

    async def _load_or_create(self, sid: str, *, create: bool) -> bytes:
        async with self._pool.acquire() as conn:
            if create:
                fresh = crypto.wrap_key(self._master, sid, crypto.new_data_key())
                await conn.execute(
                    "INSERT INTO subject_keys (subject_id, wrapped_key) VALUES ($1, $2)"
                    " ON CONFLICT (subject_id) DO NOTHING",
                    sid,
                    fresh,
                )
            row = await conn.fetchrow(
                "SELECT wrapped_key FROM subject_keys WHERE subject_id = $1", sid
            )
        if row is None or row["wrapped_key"] is None:
            raise SubjectShredded(sid)
        return crypto.unwrap_key(self._master, sid, row["wrapped_key"])

    async def _listen(self) -> None:
        listener = await self._pool.acquire()
        try:
            await listener.add_listener(SHRED_CHANNEL, self._on_shred)
        except BaseException:
            await self._pool.release(listener)
            raise
        listener.add_termination_listener(self._on_listener_lost)
        self._listener = listener

    def _on_shred(self, _conn: object, _pid: int, _channel: str, subject: object) -> None:
        self._cache.forget(str(subject))

    def _on_listener_lost(self, _conn: object) -> None:
        # Shreds announced from now on go unheard: drop every key (reads go to the
        # database, which always knows) and listen again on a new connection.
        self._listener = None
        self._cache.clear()
        # The connection may have been opened inside a request, whose trace its callbacks
        # still carry: this line, and the task listening again, belong to no request.
        trace_id_var.set(None)
        if not self._closed and self._relisten is None:
            log.warning("vault: shred listener lost; key cache off until it listens again")
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _watch_listener(self) -> None:
        """Ask the listening connection now and then; one that does not answer is ended,
        which :meth:`_on_listener_lost` sees as any loss."""
        while not self._closed:
            await asyncio.sleep(self._check_seconds)
            listener = self._listener
            if listener is None or not self._listening():
                continue
            try:
                await asyncio.wait_for(listener.fetchval("SELECT 1"), self._check_seconds / 3)
            except Exception:
                log.warning("vault: shred listener does not answer; listening anew")
                with contextlib.suppress(Exception):
                    listener.terminate()

    async def _listen_again(self) -> None:
        delay = 0.1
        try:
            while not self._closed:
                try:
                    await self._listen()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                else:
                    log.info("vault: listening for shreds again")
                    return
        finally:
            self._relisten = None
