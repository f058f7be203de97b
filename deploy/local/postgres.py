"""A private PostgreSQL cluster (Debian's binaries) with one role and database per service."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import shutil
import unicodedata
from pathlib import Path

import asyncpg

from deploy.local import procs
from deploy.local.layout import HOST, Layout
from deploy.local.tls import tls_files
from shared.config import PlatformSettings
from shared.databases import ALL_DATABASES

NAME = "postgres"
ADMIN_ROLE = "imt_admin"
# The deletion verifier's role: reads every table (pg_read_all_data) and can change none.
VERIFIER_ROLE = "imt_verifier"
PG_ROOT = Path("/usr/lib/postgresql")
INSTALL = "apt-get install -y --no-install-recommends postgresql"
# Built-in roles (PostgreSQL 14+) that let the maintenance role back up and restore data.
ADMIN_GRANTS = ("pg_read_all_data", "pg_write_all_data", "pg_signal_backend")


def data_dir(layout: Layout) -> Path:
    return layout.state / "pg"


def socket_dir(layout: Layout) -> Path:
    return layout.run / "pg"


def bin_dir() -> Path | None:
    """Newest installed server version (Debian keeps each in /usr/lib/postgresql/<ver>)."""
    found = [p.parent for p in PG_ROOT.glob("*/bin/pg_ctl") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


def ensure_binaries() -> Path:
    found = bin_dir()
    if found:
        return found
    procs.apt_install(["postgresql"], "PostgreSQL server")
    found = bin_dir()
    if not found:
        raise procs.StackError(f"{INSTALL} ran but no pg_ctl under {PG_ROOT}")
    return found


def render_conf(layout: Layout) -> str:
    return f"""\
# Written by deploy/local/postgres.py on every `up`; edit there.
listen_addresses = '{HOST}'
port = {layout.ports.postgres}
unix_socket_directories = '{socket_dir(layout)}'
unix_socket_permissions = 0700
max_connections = 300
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
fsync = on
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = off
# initdb copies the machine's TZ: the services' pools ask for UTC themselves, and so
# does every other session here (psql, the tests' reads, backups).
timezone = 'UTC'
log_timezone = 'UTC'
# TLS is offered on every connection (P-10); clients choose it with sslmode.
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server-key.pem'
ssl_min_protocol_version = 'TLSv1.2'
"""


# Trust only on the unix socket, whose folder (0700) only the cluster's OS user can enter.
HBA = """\
# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       postgres                trust
local   all       all                     scram-sha-256
host    all       all       127.0.0.1/32  scram-sha-256
host    all       all       ::1/128       scram-sha-256
"""


def _pg(tool: str, *args: str) -> list[str]:
    found = bin_dir()
    if found is None:
        raise procs.StackError(f"PostgreSQL server not installed; run: {INSTALL}")
    return procs.as_user([str(found / tool), *args], procs.service_user())


def _initdb(layout: Layout) -> None:
    data = data_dir(layout)
    if (data / "PG_VERSION").exists():
        return
    # initdb into a side folder: a killed initdb must not leave a cluster that looks real.
    staging = data.with_name("pg.initdb")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    procs.chown(staging, procs.service_user())
    argv = _pg("initdb", "-D", str(staging), "-U", "postgres", "-E", "UTF8",
               "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256")  # fmt: skip
    procs.run(argv, "initdb", cwd=layout.state)
    staging.rename(data)


def _append_include(main_conf: Path) -> None:
    # The data folder belongs to the postgres OS user, who could make this a link to any
    # file root would then append to: the link is refused, not followed.
    fd = os.open(main_conf, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "a") as handle:
        handle.write("\ninclude 'imt.conf'\n")


def _write_config(layout: Layout) -> bool:
    data, user = data_dir(layout), procs.service_user()
    main_conf = data / "postgresql.conf"
    if "include 'imt.conf'" not in main_conf.read_text():
        _append_include(main_conf)
    tls = tls_files(layout.tls)
    # PostgreSQL refuses a key readable by others or owned by another user: copy both in.
    changed = procs.write_atomic(data / "server.pem", tls.cert.read_text(), mode=0o600)
    changed |= procs.write_atomic(data / "server-key.pem", tls.key.read_text(), mode=0o600)
    changed |= procs.write_atomic(data / "imt.conf", render_conf(layout), mode=0o600)
    changed |= procs.write_atomic(data / "pg_hba.conf", HBA, mode=0o600)
    sockets = socket_dir(layout)
    sockets.mkdir(mode=0o700, exist_ok=True)
    logfile = layout.log(NAME)
    logfile.touch()
    for path in (data / "imt.conf", data / "pg_hba.conf", data / "server.pem",
                 data / "server-key.pem", sockets, logfile):  # fmt: skip
        procs.chown(path, user)
    return changed


def running_pid(layout: Layout) -> int | None:
    return procs.our_pid(data_dir(layout) / "postmaster.pid", str(data_dir(layout)))


def _start(layout: Layout) -> None:
    procs.require_free(layout.ports.postgres, "PostgreSQL", "IMT_PG_PORT")
    argv = _pg("pg_ctl", "-D", str(data_dir(layout)), "-l", str(layout.log(NAME)),
               "-w", "-t", "60", "start")  # fmt: skip
    try:
        procs.run(argv, "pg_ctl start", timeout=90, cwd=layout.state)
    except procs.StackError as exc:
        raise procs.failure("PostgreSQL", layout.log(NAME), str(exc).splitlines()[0]) from exc


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """SCRAM-SHA-256 verifier, so the plain password never reaches the server or its logs."""
    # NFKC is what SASLprep amounts to for any password a human would type.
    secret = unicodedata.normalize("NFKC", password).encode()
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise procs.StackError(f"refusing unusual role/database name {name!r}")
    return f'"{name}"'


async def _ensure_role(conn: asyncpg.Connection, name: str, options: str, password: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    verb = "ALTER" if exists else "CREATE"
    # Utility statements take no bind parameters; the verifier is base64 and '$', no quotes.
    await conn.execute(
        f"{verb} ROLE {_ident(name)} WITH {options} PASSWORD '{scram_verifier(password)}'"
    )


async def _ensure_database(conn: asyncpg.Connection, name: str) -> None:
    db = _ident(name)
    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await conn.execute(f"CREATE DATABASE {db} OWNER {db}")
    # Without this every role could connect to every database (PUBLIC has CONNECT).
    await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC")
    await conn.execute(
        f"GRANT CONNECT ON DATABASE {db} TO {db}, {_ident(ADMIN_ROLE)}, {_ident(VERIFIER_ROLE)}"
    )
    await conn.execute(f"GRANT {db} TO {_ident(ADMIN_ROLE)}")


async def provision(layout: Layout) -> None:
    """Roles and databases of every service, plus the maintenance role; idempotent."""
    conn = await asyncpg.connect(
        host=str(socket_dir(layout)), port=layout.ports.postgres, user="postgres",
        database="postgres", timeout=10,
    )  # fmt: skip
    try:
        await provision_on(conn)
    finally:
        await conn.close()


async def provision_on(conn: asyncpg.Connection) -> None:
    """What :func:`provision` does, through a superuser's connection to any server."""
    password = PlatformSettings().postgres_password.get_secret_value()
    await _ensure_role(conn, ADMIN_ROLE, "LOGIN CREATEDB CREATEROLE", password)
    for builtin in ADMIN_GRANTS:
        await conn.execute(f"GRANT {builtin} TO {_ident(ADMIN_ROLE)}")
    verifier = _ident(VERIFIER_ROLE)
    await _ensure_role(conn, VERIFIER_ROLE, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", password)
    await conn.execute(f"GRANT pg_read_all_data TO {verifier}")
    await conn.execute(f"ALTER ROLE {verifier} SET default_transaction_read_only = on")
    for name in ALL_DATABASES:
        await _ensure_role(conn, name, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", password)
        await _ensure_database(conn, name)


async def _provision_server(dsn: str) -> None:
    for _ in range(60):  # a container's server may still be starting
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            break
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await asyncio.sleep(1)
    else:
        raise procs.StackError("PostgreSQL did not answer within a minute")
    try:
        await provision_on(conn)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m deploy.local.postgres provision --dsn DSN``: roles and databases on a
    server started elsewhere (docker-compose's), through a superuser's DSN."""
    parser = argparse.ArgumentParser(prog="python -m deploy.local.postgres")
    parser.add_argument("command", choices=["provision"])
    parser.add_argument("--dsn", required=True, help="a superuser's DSN, e.g. postgresql://...")
    args = parser.parse_args(argv)
    asyncio.run(_provision_server(args.dsn))


async def _answers(layout: Layout) -> bool:
    try:
        conn = await asyncpg.connect(
            host=str(socket_dir(layout)), port=layout.ports.postgres, user="postgres",
            database="postgres", timeout=3,
        )  # fmt: skip
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def up(layout: Layout) -> str:
    ensure_binaries()
    data_dir(layout).parent.mkdir(parents=True, exist_ok=True)
    _initdb(layout)
    changed = _write_config(layout)
    if running_pid(layout) is None:
        _start(layout)
    elif changed:
        # Settings that need a restart (port, memory) are flagged by PostgreSQL in its log.
        argv = _pg("pg_ctl", "-D", str(data_dir(layout)), "reload")
        procs.run(argv, "pg_ctl reload", cwd=layout.state)
    if not procs.wait_for(lambda: asyncio.run(_answers(layout)), 30, lambda: True):
        raise procs.failure("PostgreSQL", layout.log(NAME), "no connection after 30s")
    asyncio.run(provision(layout))
    return f"postgresql://<service>:<password>@{HOST}:{layout.ports.postgres}/<service>"


def status(layout: Layout) -> tuple[bool, str]:
    port = layout.ports.postgres
    return procs.describe(running_pid(layout), procs.port_open(port), (port,), f"{HOST}:{port}")


def down(layout: Layout, wipe: bool = False) -> None:
    pid = running_pid(layout)
    if pid:
        argv = _pg("pg_ctl", "-D", str(data_dir(layout)), "-m", "fast", "-w", "-t", "60", "stop")
        try:
            procs.run(argv, "pg_ctl stop", timeout=90, cwd=layout.state)
        except procs.StackError:
            procs.stop_pid(pid)
    if wipe:
        shutil.rmtree(data_dir(layout), ignore_errors=True)
        shutil.rmtree(socket_dir(layout), ignore_errors=True)


if __name__ == "__main__":
    main()
