"""The vault on real PostgreSQL: seal, open, shred, in every process, and in backups."""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.config import PlatformSettings
from shared.vault import SubjectShredded, Vault


async def test_what_one_process_seals_another_opens(vaults: tuple[Vault, Vault]) -> None:
    first, second = vaults
    subject = uuid.uuid4()
    sealed = await first.seal(subject, "Jane Doe", purpose="accounts.users.name")
    assert await second.open(subject, sealed, purpose="accounts.users.name") == "Jane Doe"


async def test_after_a_shred_no_process_opens_or_seals_for_the_subject(
    vaults: tuple[Vault, Vault],
) -> None:
    first, second = vaults
    subject, bystander = uuid.uuid4(), uuid.uuid4()
    sealed = await first.seal(subject, "jane@example.com", purpose="email")
    kept = await first.seal(bystander, "john@example.com", purpose="email")
    assert await second.open(subject, sealed, purpose="email") == "jane@example.com"  # cached

    assert await first.shred(subject) is True

    for _ in range(1500):  # the shred notice reaches the other vault within milliseconds
        try:
            await second.open(subject, sealed, purpose="email")
        except SubjectShredded:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(SubjectShredded):
        await second.open(subject, sealed, purpose="email")
    with pytest.raises(SubjectShredded):
        await first.seal(subject, "new data for an erased user", purpose="email")
    assert await second.open(bystander, kept, purpose="email") == "john@example.com"
    assert await first.shred(subject) is False  # idempotent
    assert await second.is_shredded(subject)


@pytest.mark.promise("P-16")
async def test_a_shred_racing_a_first_seal_leaves_no_usable_key(
    vaults: tuple[Vault, Vault],
) -> None:
    """A subject without a key yet: one process seals for it while another shreds it.
    Whichever commits first, the subject ends shredded and nothing sealed opens."""
    first, second = vaults

    async def check(subject: uuid.UUID, sealed: bytes | BaseException) -> None:
        assert await first.is_shredded(subject)
        if isinstance(sealed, bytes):  # the seal came first: its key went with the shred
            with pytest.raises(SubjectShredded):
                await second.open(subject, sealed, purpose="email")
        else:
            assert isinstance(sealed, SubjectShredded)
        with pytest.raises(SubjectShredded):
            await second.seal(subject, "later", purpose="email")  # the shredding one

    # Each order once for certain (the race below mostly ends with the seal first).
    sealed_first = uuid.uuid4()
    sealed = await first.seal(sealed_first, "jane@example.com", purpose="email")
    assert await second.shred(sealed_first) is True
    await check(sealed_first, sealed)
    shredded_first = uuid.uuid4()
    await second.shred(shredded_first)
    with pytest.raises(SubjectShredded) as refused:
        await first.seal(shredded_first, "jane@example.com", purpose="email")
    await check(shredded_first, refused.value)

    for _ in range(25):
        subject = uuid.uuid4()
        raced, _shredded = await asyncio.gather(
            first.seal(subject, "jane@example.com", purpose="email"),
            second.shred(subject),
            return_exceptions=True,
        )
        await check(subject, raced)


async def _run(argv: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(*argv)
    assert await process.wait() == 0, argv


def _pg_tool(name: str) -> str:
    from deploy.local.postgres import bin_dir

    folder = bin_dir()
    assert folder is not None
    return str(folder / name)


async def test_a_backup_taken_before_a_shred_yields_nothing_readable_after_restore(
    settings: PlatformSettings, vaults: tuple[Vault, Vault], scratch_dsn: str, tmp_path: Path
) -> None:
    """Crypto-shredding is the backstop for copies the erasure cannot reach (P-16)."""
    vault, _ = vaults
    subject = uuid.uuid4()
    conn = await asyncpg.connect(scratch_dsn)
    await conn.execute("CREATE TABLE people (id uuid PRIMARY KEY, email bytea NOT NULL)")
    await conn.execute(
        "INSERT INTO people VALUES ($1, $2)",
        subject,
        await vault.seal(subject, "jane@example.com", purpose="people.email"),
    )
    dump = tmp_path / "before.dump"
    await _run([_pg_tool("pg_dump"), "-Fc", "-t", "people", "-f", str(dump), scratch_dsn])

    await vault.shred(subject)
    await conn.execute("DROP TABLE people")  # the active store is erased...
    await _run([_pg_tool("pg_restore"), "-d", scratch_dsn, str(dump)])  # ...a backup returns
    restored = await conn.fetchval("SELECT email FROM people WHERE id = $1", subject)
    await conn.close()

    assert restored is not None
    assert b"jane" not in restored
    with pytest.raises(SubjectShredded):
        await vault.open(subject, restored, purpose="people.email")


async def test_prefetched_keys_open_and_still_obey_a_shred(vaults: tuple[Vault, Vault]) -> None:
    first, second = vaults
    subjects = [uuid.uuid4() for _ in range(20)]
    sealed = [await first.seal(s, f"user {i}", purpose="name") for i, s in enumerate(subjects)]
    shredded, never_sealed = subjects[0], uuid.uuid4()
    await first.shred(shredded)
    await asyncio.sleep(0.2)  # the notice reached the second vault

    assert await second.prefetch([*subjects, never_sealed]) == 19  # one query; no error
    assert await second.prefetch(subjects[1:]) == 0  # all cached now
    opened = [
        await second.open(s, b, purpose="name")
        for s, b in zip(subjects[1:], sealed[1:], strict=True)
    ]
    assert opened == [f"user {i}" for i in range(1, 20)]
    with pytest.raises(SubjectShredded):
        await second.open(shredded, sealed[0], purpose="name")

    await first.shred(subjects[1])  # a prefetched key goes with a shred like any other
    for _ in range(1500):
        try:
            await second.open(subjects[1], sealed[1], purpose="name")
        except SubjectShredded:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(SubjectShredded):
        await second.open(subjects[1], sealed[1], purpose="name")
