"""Unwrapped data keys kept in memory for a few seconds, never past a shred.

A key leaves the cache when its time is up, when a shred of its subject is seen (the
vault's own or another process's, through NOTIFY), and all keys leave when the vault
stops hearing shreds. A key read from the database while a shred was being seen is
used once but not kept: without that, a load that started before the shred and
finished after its notice would put the destroyed key back for a whole lifetime.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class KeyCache:
    """subject id -> unwrapped data key, for ``seconds`` each, at most ``size`` keys."""

    def __init__(
        self, seconds: float, size: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seconds = seconds
        self._size = size
        self._clock = clock
        # Insertion order is expiry order (one lifetime for all, re-inserted on put), so
        # expired keys are always at the front: pruning never scans the whole cache.
        self._keys: dict[str, tuple[bytes, float]] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """Changes whenever a key is forgotten: take it before loading a key, give it to
        :meth:`put`, and a shred seen during the load keeps the key out."""
        return self._generation

    def get(self, subject: str) -> bytes | None:
        entry = self._keys.get(subject)
        if entry is None:
            return None
        key, expires = entry
        if expires <= self._clock():
            del self._keys[subject]
            return None
        return key

    def put(self, subject: str, key: bytes, generation: int) -> None:
        if generation != self._generation or self._seconds <= 0:
            return
        now = self._clock()
        self._keys.pop(subject, None)
        self._prune(now)
        self._keys[subject] = (key, now + self._seconds)

    def forget(self, subject: str) -> None:
        self._generation += 1
        self._keys.pop(subject, None)

    def clear(self) -> None:
        self._generation += 1
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)

    def _prune(self, now: float) -> None:
        keys = self._keys
        while keys:
            oldest = next(iter(keys))
            if keys[oldest][1] > now and len(keys) < self._size:
                return
            del keys[oldest]
