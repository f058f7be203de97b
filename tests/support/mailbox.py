"""The local SMTP sink's messages, read over its HTTP API (real mail, never mocked)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from typing import Any, TypeVar

import httpx

from deploy.local.layout import HOST, Layout

SMTP_WEB = f"http://{HOST}:{Layout.from_env().ports.smtp_web}"
T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float = 60.0,
    interval: float = 0.3,
) -> T:
    """Poll ``probe`` until ``done`` holds; the last value is returned (or raise)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.0f}s; last: {value!r}")
        await asyncio.sleep(interval)


class Mailbox:
    """The SMTP sink's messages, read over its HTTP API (never cleared)."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(base_url=SMTP_WEB, timeout=30)
        self._cache: dict[str, EmailMessage] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def listing(self, *addresses: str) -> list[dict[str, Any]]:
        """What the sink recorded (id, envelope, subject, tls, time) of every message, or
        of those for any of ``addresses`` (chosen by the sink: the polls stay small)."""
        params = {"to": list(addresses)}
        listed: list[dict[str, Any]] = (
            await self._client.get("/api/messages", params=params)
        ).json()
        return listed

    async def to(self, *addresses: str) -> list[EmailMessage]:
        """Every message received for any of ``addresses``, parsed, oldest first."""
        if not addresses:
            return []
        return [await self.message(meta["id"]) for meta in await self.listing(*addresses)]

    async def raw_to(self, *addresses: str) -> list[bytes]:
        """The bytes of every message received for any of ``addresses``, oldest first
        (what a test parses itself, e.g. UTF-8 headers as text)."""
        if not addresses:
            return []
        return [
            (await self._client.get(f"/api/messages/{meta['id']}")).content
            for meta in await self.listing(*addresses)
        ]

    async def message(self, ident: str) -> EmailMessage:
        if ident not in self._cache:
            raw = (await self._client.get(f"/api/messages/{ident}")).content
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self._cache[ident] = parsed
        return self._cache[ident]

    async def wait_for(
        self, addresses: Sequence[str], count: int, timeout: float = 60.0
    ) -> list[EmailMessage]:
        return await eventually(
            lambda: self.to(*addresses), lambda m: len(m) >= count, timeout=timeout
        )

    async def set_mode(self, mode: str) -> None:
        response = await self._client.post("/api/mode", json={"mode": mode})
        response.raise_for_status()
