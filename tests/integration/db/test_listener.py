"""shared.db.listener on PostgreSQL: a listener that lost its connection listens again,
whether the loss was announced (the backend terminated) or silent (a connection that
no longer answers), and a catch-up that fails is tried again."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import asyncpg

from shared.db.listener import Listener

CHANNEL = "listener_test"
# The listener's connections carry this name, so the test finds its backend by name: the
# query column would not do (the periodic check's SELECT 1 overwrites the LISTEN).
APP = "listener_under_test"


def _named(dsn: str) -> str:
    """The DSN with APP as application_name (asyncpg passes it as a server setting)."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={APP}"


async def _until(check: Any, tries: int = 400) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not in time")


async def _heard(listener: Listener, heard: list[str], dsn: str, payload: str) -> None:
    """NOTIFY until the listener hears it (it may still be connecting)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(20):
            while payload not in heard:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_a_terminated_listener_listens_again_and_retries_a_failed_catch_up(
    scratch_dsn: str,
) -> None:
    heard: list[str] = []
    catch_ups: list[float] = []

    async def on_resumed(deaf_seconds: float) -> None:
        catch_ups.append(deaf_seconds)
        if len(catch_ups) == 1:
            raise ConnectionResetError("the first catch-up fails")

    listener = Listener(_named(scratch_dsn), CHANNEL, heard.append, on_resumed)
    await listener.start()
    try:
        await _heard(listener, heard, scratch_dsn, "before")
        conn = await asyncpg.connect(scratch_dsn)
        try:
            terminated = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = $1",
                APP,
            )
        finally:
            await conn.close()
        assert terminated == 1
        await _until(lambda: len(catch_ups) == 2)  # failed once, tried again
        assert catch_ups[1] >= catch_ups[0] >= 0
        assert listener.resumed == 1
        await _heard(listener, heard, scratch_dsn, "after")
    finally:
        await listener.close()


async def test_a_connection_that_no_longer_answers_is_replaced(scratch_dsn: str) -> None:
    """The listener's server process stopped (SIGSTOP): the connection stays open but
    answers nothing, as after a dropped NAT entry. The periodic check replaces it."""
    heard: list[str] = []
    listener = Listener(_named(scratch_dsn), CHANNEL, heard.append, check_seconds=0.3)
    await listener.start()
    conn = await asyncpg.connect(scratch_dsn)
    stopped: list[int] = []
    try:
        await _heard(listener, heard, scratch_dsn, "before")
        [pid] = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = $1", APP
        )]  # fmt: skip
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        await _until(lambda: listener.resumed == 1)
        await _heard(listener, heard, scratch_dsn, "again")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        await conn.close()
        await listener.close()
