"""Backups as a store of their own: ``python -m services.deletion.backups take|expire|restore``.

* ``take``: ``pg_dump`` of every service database (as the maintenance role) into
  ``<backup dir>/<snapshot id>/<database>.dump`` with a ``manifest.json`` (time,
  databases, expiry), and marks the backup folder as the backups' own (:data:`MARKER`).
  The vault is never in these backups: its keys are what makes a subject unreadable in
  them once shredded.
* ``expire``: removes snapshots past their expiry; deletion requests waiting in
  ``backups_pending`` are woken, since the last copy of their subject may just have gone.
* ``restore``: restores a snapshot into new databases (``restored_...``) and replays the
  deletion ledger (every erasure not finished when the snapshot was taken, and every
  retention release not answered by then) *before* printing where the data is, so
  nothing reads a resurrected subject or a record its retention period let go.
* ``drop-restored``: drops those restored copies once the operator is done with them;
  until then the verifier searches them too, and fails any subject it finds there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from services.deletion import store
from services.deletion.config import DeletionSettings
from services.deletion.copy_locks import CopyOwner, release, try_claim
from services.deletion.domain.replay import (
    ReplayDelete,
    SubjectColumns,
    load_subject_columns,
    releases_to_replay,
    replay_plan,
    to_replay,
)
from shared.databases import SERVICE_DATABASES
from shared.db import Connection, create_pool
from shared.db.prepare import migrate_service_database

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
PG_ROOT = Path("/usr/lib/postgresql")
# In the backup folder, written by `take`: an empty mount point whose volume is not
# mounted is a folder too, and in it every snapshot's folder is missing.
MARKER = ".imt-backups"
RESTORED = "restored_"  # every copy `restore` makes from the command line starts so
PG_NAME_LIMIT = 63  # bytes in a database name; PostgreSQL cuts longer ones short


class BackupError(RuntimeError):
    """``detail``: a tool's own output, for the operator at the terminal only (it may
    quote rows of the dump); never part of the message, which logs may carry."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Manifest:
    snapshot_id: str
    taken_at: datetime
    expires_at: datetime
    databases: tuple[str, ...]
    folder: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "snapshot_id": self.snapshot_id,
                "taken_at": self.taken_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
                "databases": list(self.databases),
                "format": "pg_dump custom (-Fc), one file per database",
                "vault": "never included: shredded keys keep erased subjects unreadable",
            },
            indent=2,
        )

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        raw = json.loads((folder / "manifest.json").read_text())
        return cls(
            raw["snapshot_id"],
            datetime.fromisoformat(raw["taken_at"]),
            datetime.fromisoformat(raw["expires_at"]),
            tuple(raw["databases"]),
            folder,
        )


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: on PATH, else the newest Debian server's binaries."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        (p for p in PG_ROOT.glob(f"*/bin/{name}") if p.parent.parent.name.isdigit()),
        key=lambda p: int(p.parent.parent.name),
    )
    if not versions:
        raise BackupError(f"{name} not found (install the PostgreSQL client)")
    return str(versions[-1])


def _pg_env(settings: DeletionSettings, database: str) -> dict[str, str]:
    """libpq settings through the environment: the password never shows in argv."""
    return {
        **os.environ,
        "PGHOST": settings.postgres_host,
        "PGPORT": str(settings.postgres_port),
        "PGUSER": settings.deletion_admin_role,
        "PGPASSWORD": settings.postgres_password.get_secret_value(),
        "PGDATABASE": database,
        "PGSSLMODE": settings.postgres_sslmode,
    }


async def _run(argv: Sequence[str], env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        # pg_restore names the statement it failed in, and a COPY's context quotes rows.
        raise BackupError(
            f"{Path(argv[0]).name} exited with {process.returncode}",
            detail=stderr.decode(errors="replace")[:2000],
        )


async def _deletion_pool(settings: DeletionSettings) -> asyncpg.Pool:
    pool = await create_pool(settings.database_dsn("deletion"), max_size=2)
    await migrate_service_database(pool, "deletion", MIGRATIONS)
    return pool


# --- take ----------------------------------------------------------------------------------


async def take(
    settings: DeletionSettings,
    *,
    retention: timedelta | None = None,
    databases: Sequence[str] = SERVICE_DATABASES,
) -> Manifest:
    """Dump every service database into a new snapshot folder and index it."""
    taken_at = datetime.now(UTC)
    keep = retention or timedelta(seconds=settings.deletion_backup_retention_seconds)
    snapshot_id = f"{taken_at:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:8]}"
    root = settings.backup_dir()
    folder = root / snapshot_id
    manifest = Manifest(snapshot_id, taken_at, taken_at + keep, tuple(databases), folder)
    pool = await _deletion_pool(settings)
    try:
        await _mark_backup_folder(pool, root)
        folder.mkdir(parents=True, mode=0o700)
        # Indexed before the first dump: a request erased while we dump must wait for it.
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO backup_snapshots (snapshot_id, taken_at, expires_at, databases, path)"
                " VALUES ($1, $2, $3, $4, $5)",
                snapshot_id,
                taken_at,
                manifest.expires_at,
                list(databases),
                str(folder),
            )
        for database in databases:
            dump = folder / f"{database}.dump"
            await _run([pg_tool("pg_dump"), "-Fc", "-f", str(dump)], _pg_env(settings, database))
        (folder / "manifest.json.tmp").write_text(manifest.to_json())
        (folder / "manifest.json.tmp").rename(folder / "manifest.json")
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE backup_snapshots SET completed_at = now() WHERE snapshot_id = $1",
                snapshot_id,
            )
    finally:
        await pool.close()
    return manifest


async def _mark_backup_folder(pool: asyncpg.Pool, root: Path) -> None:
    """Write the :data:`MARKER` where there is none, unless the folder looks like an empty
    mount point: live snapshots are indexed, and not one of their folders is here. Marked
    then, the next ``expire`` would take every one of them for gone."""
    if await asyncio.to_thread((root / MARKER).is_file):
        return
    live = [row["path"] for row in await pool.fetch(
        "SELECT path FROM backup_snapshots WHERE expired_at IS NULL"
    )]  # fmt: skip
    if live and not any([await asyncio.to_thread(Path(path).is_dir) for path in live]):
        raise BackupError(
            f"{root} holds none of the {len(live)} live snapshots and no {MARKER}:"
            " is the backup volume mounted? Nothing was taken."
        )
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=0o700)
    await asyncio.to_thread(
        (root / MARKER).write_text,
        "Written by `python -m services.deletion.backups take`. Snapshots are expired\n"
        "only while this file is here: without it, the volume is taken as not mounted.\n",
    )


# --- expire --------------------------------------------------------------------------------


async def expire(settings: DeletionSettings, *, now: datetime | None = None) -> list[str]:
    """Remove snapshots past their expiry (and index entries whose folder is gone)."""
    pool = await _deletion_pool(settings)
    try:
        return await expire_due(pool, settings.backup_dir(), now or datetime.now(UTC))
    finally:
        await pool.close()


async def expire_due(pool: asyncpg.Pool, root: Path, now: datetime) -> list[str]:
    """Expire every due snapshot under ``root``; safe to run from several processes.

    Rows are claimed with SKIP LOCKED, so two workers never expire the same snapshot.
    A snapshot is marked expired only once it is due and its folder is really gone
    (P-16: physically gone); one whose removal failed stays live and is tried again next
    round. A folder that is missing counts as gone only if the backups' own folder is
    there, known by the :data:`MARKER` that ``take`` writes in it: a backup volume that
    is not mounted leaves an empty mount point, which must not pass for backups that no
    longer exist.
    """
    root_present = await asyncio.to_thread((root / MARKER).is_file)
    removed: list[str] = []
    oldest_removed: datetime | None = None
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT snapshot_id, path, taken_at, expires_at FROM backup_snapshots"
            " WHERE expired_at IS NULL FOR UPDATE SKIP LOCKED"
        )
        for row in rows:
            if not root_present or not await _removed(row, now):
                continue
            await conn.execute(
                "UPDATE backup_snapshots SET expired_at = $2 WHERE snapshot_id = $1",
                row["snapshot_id"],
                now,
            )
            removed.append(row["snapshot_id"])
            taken = row["taken_at"]
            oldest_removed = taken if oldest_removed is None else min(oldest_removed, taken)
        if oldest_removed is not None:
            await _wake_waiting(conn, oldest_removed, now)
    if not root_present and rows:
        log.error(
            "backup folder %s lacks its marker %s (volume not mounted?): no snapshot was expired",
            root,
            MARKER,
        )
    return removed


async def _removed(row: asyncpg.Record, now: datetime) -> bool:
    """Whether the due snapshot's folder is gone: removed now, or by hand before. Never
    before the snapshot is due: a folder missing early may be one moved away (another
    volume, a copy being made) as well as one deleted. A removal that fails may leave
    part of a dump from before an erasure: it is logged and the snapshot stays live, so
    the next round tries again."""
    if row["expires_at"] > now:
        return False
    folder = Path(row["path"])
    if not await asyncio.to_thread(folder.exists):
        return True
    try:
        await asyncio.to_thread(shutil.rmtree, folder)
    except OSError as exc:
        # Ids and the error's kind only, as in every log of this service: never a message.
        log.error(
            "snapshot %s could not be removed (%s, errno %s); retried next round",
            row["snapshot_id"],
            type(exc).__name__,
            exc.errno,
        )
    return not await asyncio.to_thread(folder.exists)


async def _wake_waiting(conn: Connection, oldest_removed: datetime, now: datetime) -> None:
    """Wake the requests in ``backups_pending`` that waited for a removed snapshot: its
    last copy of their subject may just have gone.

    Only those erased after a removed snapshot was taken: a request that had no snapshot
    left to wait for holds a verification lease (``next_check_at`` in the future while a
    worker verifies it); made due now, a second worker would verify it at the same time.
    """
    await conn.execute(
        "UPDATE deletion_requests SET next_check_at = $1"
        " WHERE stage = 'backups_pending' AND erased_at >= $2",
        now,
        oldest_removed,
    )
    await store.wake_ticker(conn)


# --- restore -------------------------------------------------------------------------------


def find_snapshot(settings: DeletionSettings, snapshot: str) -> Manifest:
    """A snapshot by its folder on this host (the command line's ``restore``); the
    verifier asks the index instead (:func:`newest_snapshot`)."""
    root = settings.backup_dir()
    if snapshot != "latest":
        return Manifest.read(root / snapshot)
    complete = [Manifest.read(f) for f in root.glob("*") if (f / "manifest.json").exists()]
    if not complete:
        raise BackupError(f"no complete snapshot in {root}")
    return max(complete, key=lambda m: m.taken_at)


async def newest_snapshot(conn: Connection) -> Manifest | None:
    """The newest live snapshot ``backup_snapshots`` lists as complete, or None if there
    is none (no snapshot taken yet). Read from the index, never from this host's folder:
    every process gets the same answer, and one that does not have the backup volume
    learns it through :func:`unreadable_dumps` instead of finding no snapshot there."""
    row = await conn.fetchrow(
        "SELECT snapshot_id, taken_at, expires_at, databases, path FROM backup_snapshots"
        " WHERE expired_at IS NULL AND completed_at IS NOT NULL"
        " ORDER BY taken_at DESC, snapshot_id DESC LIMIT 1"
    )
    if row is None:
        return None
    return Manifest(
        row["snapshot_id"],
        row["taken_at"],
        row["expires_at"],
        tuple(row["databases"]),
        Path(row["path"]),
    )


def unreadable_dumps(manifest: Manifest, databases: Sequence[str]) -> list[str]:
    """The databases among ``databases`` whose dump this process cannot read in the
    snapshot's folder (a folder missing here: the backup volume is not mounted)."""
    unreadable = []
    for database in databases:
        dump = manifest.folder / f"{database}.dump"
        try:
            readable = dump.is_file() and os.access(dump, os.R_OK)
        except OSError:  # a folder this process may not enter, a stale mount
            readable = False
        if not readable:
            unreadable.append(database)
    return unreadable


async def restore(
    settings: DeletionSettings,
    manifest: Manifest,
    *,
    target_prefix: str,
    databases: Sequence[str] | None = None,
    columns: SubjectColumns | None = None,
    owner: CopyOwner | None = None,
) -> dict[str, str]:
    """Restore into ``<prefix>_<database>`` databases, replaying the ledger in each first
    (the erasures and the retention releases the snapshot may predate).

    ``owner`` holds each copy's lock (:mod:`copy_locks`) from before it is created: the
    verifier's, held until it has dropped its scratch copies. Without one, the locks
    are held until this returns, each restored_ copy's until it has its name."""
    if owner is None:
        async with CopyOwner(settings) as own:
            return await restore(
                settings,
                manifest,
                target_prefix=target_prefix,
                databases=databases,
                columns=columns,
                owner=own,
            )
    columns = columns or load_subject_columns(settings.deletion_subject_columns_file)
    wanted = [d for d in manifest.databases if databases is None or d in databases]
    index_key = settings.blind_index_key.get_secret_value().encode()
    targets: dict[str, str] = {}
    pool = await _deletion_pool(settings)
    try:
        for database in wanted:
            target = f"{target_prefix}_{database}"
            _check_name(target)
            targets[database] = target
            # A copy under the verifier's eyes (restored_...) gets its name once replayed:
            # read before, it would show subjects erased since the snapshot.
            staging = _staging_name(target) if target.startswith(RESTORED) else target
            await restore_dump(settings, manifest.folder / f"{database}.dump", staging, owner)
            # The ledger as it is now, not as it was before pg_restore ran (minutes): an
            # erasure or a release begun meanwhile is in the copy too.
            async with pool.acquire() as conn:
                entries = to_replay(await store.ledger(conn), manifest.taken_at)
                releases = releases_to_replay(await store.released(conn), manifest.taken_at)
            plan = replay_plan(database, columns, entries, releases, index_key)
            await apply_replay(settings, staging, plan)
            if staging != target:
                await owner.rename(staging, target)
    finally:
        await pool.close()
    return targets


RESTORING = "restoring_"  # a restored_ copy until its replay is done: restoring_<epoch>_...


def _staging_name(target: str) -> str:
    name = f"{RESTORING}{int(time.time())}_{target.removeprefix(RESTORED)}"
    if len(name) > PG_NAME_LIMIT:
        raise BackupError(f"{target}: prefix too long (names are {PG_NAME_LIMIT} bytes at most)")
    return name


async def restore_dump(
    settings: DeletionSettings, dump: Path, target: str, owner: CopyOwner | None = None
) -> None:
    """pg_restore one dump into a new database, as it is (no replay: never serve it).
    Created under ``owner``'s lock, or under one held until this returns."""
    _check_name(target)
    if owner is None:
        async with CopyOwner(settings) as own:
            return await restore_dump(settings, dump, target, own)
    await owner.create(target)
    argv = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "-d", target, str(dump)]
    await _run(argv, _pg_env(settings, target))


async def apply_replay(settings: DeletionSettings, target: str, plan: list[ReplayDelete]) -> int:
    """Run the replay's deletes in one transaction; tables the snapshot lacks are skipped."""
    conn = await asyncpg.connect(settings.admin_dsn(target))
    deleted = 0
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        async with conn.transaction():
            for delete in plan:
                if tables.issuperset(delete.tables):
                    status = await conn.execute(delete.sql(), delete.argument())
                    deleted += int(status.split()[-1])
    finally:
        await conn.close()
    return deleted


def _check_name(name: str) -> None:
    """Database names are quoted into statements as they are."""
    if not name.replace("_", "").isalnum() or not name.islower():
        raise BackupError(f"refusing database name {name!r}")


SCRATCH = "verify"  # the verifier's restored copies: verify_<epoch seconds>_<hex>_<database>


def scratch_prefix(now: float | None = None) -> str:
    """A fresh prefix for scratch copies, stamped with its creation time (seconds)."""
    return f"{SCRATCH}_{int(time.time() if now is None else now)}_{uuid.uuid4().hex[:12]}"


async def drop_stale_scratch(settings: DeletionSettings) -> list[str]:
    """Drop the scratch copies no one owns (:mod:`copy_locks`), whatever their age: a
    worker killed during a scan leaves its copy behind, a backup's personal data that
    no erasure reaches. Those whose lock is held are another worker's scan under way."""
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    dropped: list[str] = []
    try:
        for row in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname ~ $1 ORDER BY 1", rf"^{SCRATCH}_\d+_"
        ):
            name = row["datname"]
            if not await try_claim(conn, name):
                continue
            # Held while it drops: any other cleanup takes the copy for owned meanwhile.
            try:
                log.warning("dropping scratch copy %s left behind by a verification", name)
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(name)
            finally:
                await release(conn, name)
    finally:
        await conn.close()
    return dropped


def restored_prefix(manifest: Manifest, asked: str | None = None) -> str:
    """The command line's target prefix: always under :data:`RESTORED`, so the verifier
    finds the copy (a subject erased since the snapshot may be in it, replay or not)."""
    if asked is None:
        return f"{RESTORED}{manifest.snapshot_id.lower().replace('-', '_')}"
    return asked if asked.startswith(RESTORED) else f"{RESTORED}{asked}"


async def restored_databases(conn: Connection) -> list[str]:
    """Every restored copy there is now: no one tracks them, so they are looked up. A
    copy still restoring is one once no one owns it (:mod:`copy_locks`), at any age: its
    restore was stopped before the replay, and what it holds is a snapshot's, erased
    subjects too. One a restore is still filling is not yet: read before its replay, it
    would show subjects erased since the snapshot.

    A restore may rename its copy (``restoring_...`` to ``restored_...``) while they are
    looked up: listed under its old name, then unlocked, its lock free, the copy gone by
    that name and there by one not listed. So ``pg_database`` is listed again until no
    name is new: what comes back is the last listing's copies, each judged once.

    ``conn``: a session in ``postgres``, where the owners' locks are (in any other
    database, every lock would be free and every restore under way a copy)."""
    if await conn.fetchval("SELECT current_database()") != "postgres":
        raise BackupError("restored copies are looked up from the postgres database")
    seen: set[str] = set()
    copies: set[str] = set()
    while True:
        listed = await _restored_names(conn)
        fresh = [name for name in listed if name not in seen]
        if not fresh:  # nothing renamed or made since the last listing was judged
            return [name for name in listed if name in copies]
        seen.update(fresh)
        for name in fresh:
            if name.startswith(RESTORING):
                if not await try_claim(conn, name):
                    continue  # a restore under way (renamed meanwhile: listed again)
                await release(conn, name)  # no one comes back for it: nothing to hold
            copies.add(name)


async def _restored_names(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT datname FROM pg_database WHERE left(datname, $2) = $1 OR datname ~ $3 ORDER BY 1",
        RESTORED,
        len(RESTORED),
        rf"^{RESTORING}\d+_",
    )
    return [r["datname"] for r in rows]


async def restored_copies(settings: DeletionSettings) -> list[str]:
    """:func:`restored_databases`, on a session of its own in ``postgres``."""
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        return await restored_databases(conn)
    finally:
        await conn.close()


async def drop_restored(settings: DeletionSettings, names: Sequence[str] = ()) -> list[str]:
    """Drop the restored copies named (every one if none is): once an operator is done
    with them, so no erasure has to reach them."""
    found = await restored_copies(settings)
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise BackupError(f"not a restored copy: {', '.join(unknown)}")
    chosen = [n for n in found if not names or n in names]
    await drop_databases(settings, chosen)
    return chosen


async def drop_databases(settings: DeletionSettings, names: Sequence[str]) -> None:
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.deletion.backups")
    commands = parser.add_subparsers(dest="command", required=True)
    take_cmd = commands.add_parser("take", help="snapshot every service database")
    take_cmd.add_argument("--retention-seconds", type=float, help="override the retention")
    commands.add_parser("expire", help="remove snapshots past their expiry")
    restore_cmd = commands.add_parser("restore", help="restore a snapshot, replaying deletions")
    restore_cmd.add_argument("snapshot", nargs="?", default="latest")
    restore_cmd.add_argument(
        "--prefix", default=None, help=f"target database name prefix (under {RESTORED})"
    )
    restore_cmd.add_argument("--database", action="append", help="only these databases")
    drop_cmd = commands.add_parser("drop-restored", help="drop restored copies (all by default)")
    drop_cmd.add_argument("names", nargs="*", help=f"only these databases ({RESTORED}...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        _command(args, DeletionSettings())
    except BackupError as exc:
        sys.stderr.write(f"{exc}\n{exc.detail}")
        return 1
    return 0


def _command(args: argparse.Namespace, settings: DeletionSettings) -> None:
    if args.command == "take":
        retention = timedelta(seconds=args.retention_seconds) if args.retention_seconds else None
        manifest = asyncio.run(take(settings, retention=retention))
        sys.stdout.write(f"{manifest.snapshot_id} expires {manifest.expires_at.isoformat()}\n")
    elif args.command == "expire":
        for snapshot_id in asyncio.run(expire(settings)):
            sys.stdout.write(f"expired {snapshot_id}\n")
    elif args.command == "drop-restored":
        for name in asyncio.run(drop_restored(settings, args.names)):
            sys.stdout.write(f"dropped {name}\n")
    else:
        manifest = find_snapshot(settings, args.snapshot)
        prefix = restored_prefix(manifest, args.prefix)
        targets = asyncio.run(
            restore(settings, manifest, target_prefix=prefix, databases=args.database)
        )
        for database, target in targets.items():
            sys.stdout.write(f"{database} -> {target} (deletion ledger replayed)\n")
        sys.stdout.write("drop them when done: python -m services.deletion.backups drop-restored\n")


if __name__ == "__main__":
    sys.exit(main())
