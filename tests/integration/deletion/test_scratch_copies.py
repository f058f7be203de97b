"""Restored backup copies a killed verifier left behind are dropped (P-14, P-16): known
by their owner's lock, free once the owner is gone (services/deletion/copy_locks.py)."""

import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from deploy.local.postgres import scram_verifier
from services.deletion import backups, verifier
from services.deletion.bootstrap import dependencies
from services.deletion.config import DeletionSettings
from services.deletion.copy_locks import SESSION, CopyOwner, release, try_claim
from services.deletion.store import Tracked
from tests.integration.deletion.harness import (
    copy_holding,
    harness_settings,
    running_harness,
    unowned_database,
)
from tests.unit.deletion.factories import in_stage

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.promise("P-16")
@pytest.mark.usefixtures("stack")
async def test_a_scratch_copy_no_one_owns_is_dropped_at_any_age_and_an_owned_one_kept() -> None:
    """Age tells nothing: a copy left seconds ago by a killed verification holds a
    snapshot's personal data no erasure reaches, and one a verification still works on
    may be hours old (a big restore). Only its owner's lock tells them apart."""
    settings = DeletionSettings()
    now = time.time()
    left = f"{backups.scratch_prefix(now)}_accounts"  # seconds old, its owner gone
    running = f"{backups.scratch_prefix(now - 2 * 3600)}_accounts"  # hours old, owned
    await unowned_database(settings, left)  # as a killed owner leaves it: no lock
    try:
        async with CopyOwner(settings) as owner:
            await owner.create(running)
            dropped = await backups.drop_stale_scratch(settings)
            present = await _existing(settings, [left, running])
        # Its owner gone without dropping it (an exception, a cancellation): abandoned.
        dropped_after = await backups.drop_stale_scratch(settings)
        present_after = await _existing(settings, [running])
    finally:
        await backups.drop_databases(settings, [left, running])
    assert left in dropped
    assert running not in dropped
    assert present == {running}
    assert running in dropped_after
    assert present_after == set()


_OWNER = """
import asyncio, sys
from services.deletion.config import DeletionSettings
from services.deletion.copy_locks import CopyOwner

async def main() -> None:
    async with CopyOwner(DeletionSettings()) as owner:
        await owner.create(sys.argv[1])
        print("ready", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.promise("P-16")
@pytest.mark.usefixtures("stack")
async def test_a_copy_is_dropped_as_soon_as_the_process_that_owns_it_is_killed() -> None:
    settings = DeletionSettings()
    name = f"{backups.scratch_prefix()}_analytics"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OWNER, name, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"
        assert name not in await backups.drop_stale_scratch(settings)  # at work on it
        assert await _existing(settings, [name]) == {name}
        child.kill()  # SIGKILL: no finally, no drop; the server ends its session
        await child.wait()
        deadline = time.monotonic() + 10  # the server notices the closed socket at once
        dropped: list[str] = []
        while name not in dropped and time.monotonic() < deadline:
            dropped += await backups.drop_stale_scratch(settings)
            await asyncio.sleep(0.1)
        assert name in dropped
        assert await _existing(settings, [name]) == set()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await backups.drop_databases(settings, [name])


@pytest.mark.promise("P-16")
async def test_a_verification_holds_its_copies_while_it_restores_and_scans_them(
    scratch_dsn: str, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's sweep, run while this verification restores and while it scans,
    leaves its copy alone, even once the copy's name is hours old; the copy is gone
    when the verification is done, and so is its lock."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    made: list[str] = []
    swept: dict[str, list[str]] = {}  # phase -> what a sweep dropped meanwhile
    there: dict[str, set[str]] = {}

    def old_prefix(now: float | None = None) -> str:
        made.append(real_prefix(time.time() - 2 * 3600))  # a verification hours long
        return made[-1]

    async def sweep(phase: str, target: str) -> None:
        if made and target.startswith(made[-1]):  # the live databases are scanned first
            swept[phase] = await backups.drop_stale_scratch(settings)
            there[phase] = await _existing(settings, [target])

    async def replay(settings_: DeletionSettings, target: str, plan: list[Any]) -> int:
        await sweep("restore", target)
        return await real_replay(settings_, target, plan)

    async def scan(dsn: str, database: str, ids: Sequence[UUID]) -> verifier.Hits:
        await sweep("scan", dsn.rsplit("/", 1)[-1].split("?")[0])
        return await real_scan(dsn, database, ids)

    real_prefix, real_replay, real_scan = (
        backups.scratch_prefix,
        backups.apply_replay,
        verifier.scan_database,
    )
    monkeypatch.setattr(backups, "scratch_prefix", old_prefix)
    monkeypatch.setattr(backups, "apply_replay", replay)
    monkeypatch.setattr(verifier, "scan_database", scan)
    async with running_harness(settings, with_worker=False) as harness:
        snapshot = await backups.take(settings, databases=["analytics"])
        verify = dependencies(settings, harness.runtime).verify
        assert verify is not None
        request = Tracked(in_stage("backups_pending", "device"), initiated_by="user")
        verdict = (await verify([request]))[request.request.request_id]
    copy = f"{made[-1]}_analytics"
    assert swept == {"restore": [], "scan": []}
    assert there == {"restore": {copy}, "scan": {copy}}
    assert f"backup:{snapshot.snapshot_id}" in verdict.scanned
    assert await _existing(settings, [copy]) == set()
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        assert await try_claim(conn, copy)  # no one holds it any more
        await release(conn, copy)
    finally:
        await conn.close()


@pytest.mark.promise("P-16")
@pytest.mark.parametrize("verify_backups", [True, False], ids=["no-snapshot", "backups-off"])
async def test_a_killed_verifications_copy_is_gone_before_a_request_is_certified(
    scratch_dsn: str, suffix: str, tmp_path: Path, verify_backups: bool
) -> None:
    """A verification killed between pg_restore and the replay leaves a snapshot's copy as
    it was, an erased subject's rows in it. Once that snapshot has expired, or backups
    are no longer verified, no verification restores a snapshot: the copy must go all
    the same, or a request is certified while its subject's rows are still in it."""
    settings = harness_settings(
        scratch_dsn, suffix, tmp_path, deletion_verify_backups=verify_backups
    )
    left = f"{backups.scratch_prefix(time.time() - 2 * 3600)}_analytics"
    subject = uuid.uuid4()
    await copy_holding(settings, left, subject)
    try:
        async with running_harness(settings) as harness:
            request_id, _ = await harness.request_deletion(subject)
            assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
            assert await _existing(settings, [left]) == set()
    finally:
        await backups.drop_databases(settings, [left])


@pytest.mark.promise("P-16")
@pytest.mark.usefixtures("stack")
async def test_an_owners_session_outlives_any_idle_timeout_and_not_its_host() -> None:
    """The lock's session sits idle through pg_restore and the scan, hours maybe. An
    idle_session_timeout the server or the role sets would end it, and the lock with it,
    silently: the copy dropped mid-scan, or a restore searched before its replay. And
    the session of an owner whose host died would keep the lock until TCP gives up on
    it (two hours by default), the copy owned all that time."""
    settings = DeletionSettings()
    role = f"t_copy_owner_{uuid.uuid4().hex[:12]}"
    as_role = settings.model_copy(update={"deletion_admin_role": role})
    password = scram_verifier(settings.postgres_password.get_secret_value())
    name = f"{backups.scratch_prefix()}_analytics"
    admin = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
        await admin.execute(f"ALTER ROLE {role} SET idle_session_timeout = '1s'")
        plain = await asyncpg.connect(as_role.admin_dsn("postgres"))
        try:  # any other session of the role is ended after a second idle
            assert await plain.fetchval("SHOW idle_session_timeout") == "1s"
        finally:
            await plain.close()
        async with CopyOwner(as_role) as owner:
            await owner.create(name)
            await asyncio.sleep(4)  # idle, as through a restore and a scan
            claimed = await try_claim(admin, name)
            if claimed:
                await release(admin, name)
            assert not claimed  # still owned
            assert owner._conn is not None
            rows = await owner._conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                list(SESSION),
            )
        in_effect = {r["name"]: int(r["setting"]) for r in rows}
        assert in_effect["idle_session_timeout"] == 0
        assert in_effect["idle_in_transaction_session_timeout"] == 0
        # A dead owner's lock goes within two minutes (the session is over TCP here).
        idle, interval, count = (
            in_effect[f"tcp_keepalives_{k}"] for k in ("idle", "interval", "count")
        )
        assert 0 < idle + interval * count <= 120
        assert 0 < in_effect["tcp_user_timeout"] <= 120_000  # milliseconds
    finally:
        await backups.drop_databases(as_role, [name])
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def _existing(settings: DeletionSettings, names: list[str]) -> set[str]:
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names
        )
    finally:
        await conn.close()
    return {r["datname"] for r in rows}
