"""A loop of rounds for a worker's housekeeping: every ``interval`` seconds while idle,
at once again while busy, or when woken."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from shared.bus.consumer import OUTAGES

log = logging.getLogger(__name__)


class Periodic(abc.ABC):
    """A round every ``interval`` seconds until stopped (at once again while busy)."""

    name = "round"

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    def wake(self) -> None:
        """Start the next round now rather than at the end of the interval."""
        self._woken.set()

    @abc.abstractmethod
    def interval(self) -> float:
        """Seconds between rounds while idle."""

    @abc.abstractmethod
    async def round(self) -> bool:
        """One round; True if more work may be waiting."""

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.round()
            except OUTAGES as exc:
                log.warning("%s: outage (%s), retrying", self.name, type(exc).__name__)
                busy = False
            except Exception:
                # A round that fails is retried at the next one; the loop itself never dies.
                log.exception("%s: round failed; retrying", self.name)
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self.interval())
            self._woken.clear()
