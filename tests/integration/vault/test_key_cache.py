"""The vault's key cache on real PostgreSQL, as accounts uses it: a key is never served
from a cache after its subject is shredded, whether the shred was this process's or
another's (NOTIFY), whether it happened during a key load, or while the cache's
listening connection was lost."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from shared.config import PlatformSettings
from shared.vault import SubjectShredded, Vault

PURPOSE = "accounts.users.name"
pytestmark = pytest.mark.promise("P-16")


async def _until(done: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.01)


async def _database_reads(vault: Vault, action: Callable[[], Awaitable[object]]) -> int:
    """How many times ``action`` made ``vault`` read a key from the database."""
    original = vault._load_or_create
    reads = 0

    async def counting(sid: str, *, create: bool) -> bytes:
        nonlocal reads
        reads += 1
        return await original(sid, create=create)

    vault._load_or_create = counting  # type: ignore[method-assign]
    try:
        await action()
    finally:
        vault._load_or_create = original  # type: ignore[method-assign]
    return reads


async def test_keys_are_cached_and_a_shred_elsewhere_drops_them_at_once(
    vaults: tuple[Vault, Vault],
) -> None:
    api, worker = vaults
    subject = uuid.uuid4()
    sealed = await api.seal(subject, "Jane Doe", purpose=PURPOSE)
    assert await _database_reads(api, lambda: api.open(subject, sealed, purpose=PURPOSE)) == 0

    generation = api._cache.generation
    assert await worker.shred(subject)
    await _until(lambda: api._cache.generation != generation, "the shred notice arrived")
    with pytest.raises(SubjectShredded):
        await api.open(subject, sealed, purpose=PURPOSE)


async def test_a_key_loaded_while_its_shred_is_heard_is_not_kept(
    vaults: tuple[Vault, Vault],
) -> None:
    api, worker = vaults
    subject = uuid.uuid4()
    sealed = await worker.seal(subject, "Jane Doe", purpose=PURPOSE)
    loaded, release = asyncio.Event(), asyncio.Event()
    original = api._load_or_create

    async def slow_load(sid: str, *, create: bool) -> bytes:
        key = await original(sid, create=create)  # read before the shred...
        loaded.set()
        await release.wait()  # ...and handed back only after its notice arrived
        return key

    api._load_or_create = slow_load  # type: ignore[method-assign]
    reading = asyncio.create_task(api.open(subject, sealed, purpose=PURPOSE))
    await loaded.wait()
    generation = api._cache.generation
    await worker.shred(subject)
    await _until(lambda: api._cache.generation != generation, "the shred notice arrived")
    release.set()
    assert await reading == "Jane Doe"  # that read happened before the shred
    api._load_or_create = original  # type: ignore[method-assign]

    assert api._cache.get(str(subject)) is None
    with pytest.raises(SubjectShredded):
        await api.open(subject, sealed, purpose=PURPOSE)


async def test_without_its_listener_a_vault_caches_nothing_until_it_listens_again(
    vaults: tuple[Vault, Vault], scratch_dsn: str
) -> None:
    api, worker = vaults
    subject, later = uuid.uuid4(), uuid.uuid4()
    sealed = await api.seal(subject, "Jane Doe", purpose=PURPOSE)
    sealed_later = await api.seal(later, "John Roe", purpose=PURPOSE)
    assert api._listener is not None
    pid = api._listener.get_server_pid()
    outage_over = asyncio.Event()
    listen = api._listen

    async def listen_after_the_outage() -> None:
        await outage_over.wait()
        await listen()

    api._listen = listen_after_the_outage  # type: ignore[method-assign]

    admin = await asyncpg.connect(scratch_dsn)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    # The connection reports closed a moment before its termination callback runs;
    # a relisten task exists only once that callback has dropped the keys.
    await _until(lambda: api._relisten is not None, "the vault noticed its listener is gone")
    assert not api._listening()
    assert len(api._cache) == 0

    # Shreds are unheard now: a key must come from the database, which always knows.
    await worker.shred(subject)
    with pytest.raises(SubjectShredded):
        await api.open(subject, sealed, purpose=PURPOSE)

    assert await _database_reads(api, lambda: api.open(later, sealed_later, purpose=PURPOSE)) == 1
    outage_over.set()
    await _until(api._listening, "the vault listens again")
    assert await api.open(later, sealed_later, purpose=PURPOSE) == "John Roe"
    assert await _database_reads(api, lambda: api.open(later, sealed_later, purpose=PURPOSE)) == 0
    generation = api._cache.generation
    await worker.shred(later)
    await _until(lambda: api._cache.generation != generation, "the new listener hears shreds")
    with pytest.raises(SubjectShredded):
        await api.open(later, sealed_later, purpose=PURPOSE)


async def test_the_shredding_vault_forgets_the_key_before_it_returns(
    vaults: tuple[Vault, Vault],
) -> None:
    api, _ = vaults
    subject = uuid.uuid4()
    sealed = await api.seal(subject, "Jane Doe", purpose=PURPOSE)
    await api.shred(subject)
    with pytest.raises(SubjectShredded):  # no wait for its own notice
        await api.open(subject, sealed, purpose=PURPOSE)


async def _free_slots(pool: asyncpg.Pool) -> int:
    """How many connections the pool hands out now (each held until all are counted)."""
    held = []
    try:
        while True:
            try:
                held.append(await pool.acquire(timeout=1))
            except TimeoutError:
                return len(held)
    finally:
        for conn in held:
            await pool.release(conn)


async def test_a_listener_that_stops_answering_is_replaced_and_its_pool_slot_freed(
    settings: PlatformSettings, vault_pool: asyncpg.Pool
) -> None:
    """A connection can die without a word (its server frozen, a dropped NAT entry): no
    termination callback comes. The vault asks it, and drops its keys as for any loss."""
    api = await Vault.connect(settings, vault_pool, check_seconds=0.6)
    try:
        subject = uuid.uuid4()
        sealed = await api.seal(subject, "Jane Doe", purpose=PURPOSE)
        assert len(api._cache) == 1
        assert api._listener is not None
        frozen = api._listener.get_server_pid()
        os.kill(frozen, signal.SIGSTOP)  # the backend answers nothing, closes nothing
        try:

            def listens_anew() -> bool:
                listener = api._listener
                return listener is not None and listener.get_server_pid() != frozen

            await _until(listens_anew, "the vault saw its listener dead and listens anew")
            assert api._listening()
            assert len(api._cache) == 0  # dropped with the loss
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert await api.open(subject, sealed, purpose=PURPOSE) == "Jane Doe"
        # Only the new listener holds a slot: the frozen one's is free again.
        assert await _free_slots(vault_pool) == vault_pool.get_max_size() - 1
    finally:
        await api.close()
