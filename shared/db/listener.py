"""LISTEN on a channel, on a connection of its own, and listen again when it is lost.

A ``NOTIFY`` reaches only the connections listening when it is sent: a listener whose
connection dropped (PostgreSQL restarted, the backend was terminated) hears nothing
more, and nothing says so. This one notices the loss (asyncpg's termination callback,
and a periodic ``SELECT 1`` for a connection that died without a word), connects again
with back-off, and then calls ``on_resumed`` with how long it was deaf, so its owner can
catch up on what it missed (the notifications themselves are gone for good). A catch-up
that fails is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

OnNotify = Callable[[str], None]
OnResumed = Callable[[float], Awaitable[None]]


class Listener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: OnNotify,
        on_resumed: OnResumed | None = None,
        *,
        max_delay: float = 5.0,
        check_seconds: float = 15.0,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._on_resumed = on_resumed
        self._max_delay = max_delay
        self._check_seconds = check_seconds
        self._conn: asyncpg.Connection | None = None
        self._again: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._lost_at = 0.0
        self._closed = False
        self.resumed = 0  # how many times it listened again after a loss

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Listen now; raises if PostgreSQL cannot be reached (a start-up error)."""
        await self._listen()
        self._watch = asyncio.get_running_loop().create_task(self._watch_connection())

    async def close(self) -> None:
        self._closed = True
        for task in (self._again, self._watch):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._lost)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._lost)
        self._conn = conn

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_notify(str(payload))

    def _lost(self, _conn: object) -> None:
        self._conn = None
        if not self._closed and self._again is None:
            log.warning("listener on %s lost; listening again", self._channel)
            self._lost_at = time.monotonic()
            self._again = asyncio.get_running_loop().create_task(self._listen_again())

    async def _watch_connection(self) -> None:
        """A connection can die without a word (a dropped NAT entry, a fail-over): ask."""
        while not self._closed:
            await asyncio.sleep(self._check_seconds)
            conn = self._conn
            if conn is None or conn.is_closed():
                continue
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._check_seconds / 3)
            except Exception:
                log.warning("listener on %s: no answer; reconnecting", self._channel)
                conn.terminate()  # calls _lost

    async def _listen_again(self) -> None:
        try:
            # Lost again while catching up (_lost saw this task still running): go on.
            while not self._closed and not self.listening:
                await self._back_off(self._listen)
                if self._closed:
                    return
                self.resumed += 1
                log.info("listener on %s: listening again", self._channel)
                if self._on_resumed is not None:
                    await self._back_off(self._catch_up, "catching up")
        finally:
            self._again = None

    async def _catch_up(self) -> None:
        assert self._on_resumed is not None
        await self._on_resumed(time.monotonic() - self._lost_at)

    async def _back_off(self, attempt: Callable[[], Awaitable[None]], what: str = "") -> None:
        delay = 0.1
        while not self._closed:
            try:
                await attempt()
                return
            except Exception as exc:
                if what:
                    log.warning("listener on %s: %s failed (%s)", self._channel, what,
                                type(exc).__name__)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
