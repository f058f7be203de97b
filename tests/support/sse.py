"""Reading a live inbox stream (server-sent events) as the notifier's hub writes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any


async def next_event(events: AsyncIterator[str]) -> dict[str, Any]:
    """The stream's next event (keep-alives skipped): its name and its data's fields."""
    while True:
        chunk = await asyncio.wait_for(anext(events), 10)
        if chunk.startswith(":"):
            continue  # keep-alive
        lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
        return {"event": lines["event"], **json.loads(lines["data"])}


async def session_open() -> bool:
    """A stream's session check that always finds the session open."""
    return True
