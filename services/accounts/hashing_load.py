"""How long passwords wait for a hashing thread, for operators (``/metrics``).

Logins, sign-ups and password changes hash on a few threads of their own, at the lowest
CPU priority (``security.py`` says why). Under load a hash waits for a free thread
when more logins come than the threads verify, and takes longer on its thread while
other work keeps the CPUs busy. Both are what a user feels as a slow login, so both
are counted: ``password_hashes_waiting`` now; ``password_hash_wait_seconds`` (the wait
for a thread) and ``password_hash_seconds`` (the time on it), each the count and sum
since start-up (a summary), for their means over any window. The
``LoginsWaitForHashing`` alert reads those two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector


@dataclass
class Ticket:
    """One hash, from its submission until a thread starts it or its caller gives up."""

    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    open: bool = True


class HashingLoad:
    """Hashes waiting now, and how long those started waited and ran: safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self._started = 0
        self._waited = 0.0
        self._finished = 0
        self._hashing = 0.0

    def submit(self) -> Ticket:
        with self._lock:
            self._waiting += 1
        return Ticket()

    def start(self, ticket: Ticket) -> None:
        """On the hashing thread, as the hash begins."""
        with self._lock:
            if ticket.open:
                ticket.open = False
                ticket.started = time.monotonic()
                self._waiting -= 1
                self._started += 1
                self._waited += ticket.started - ticket.submitted

    def finish(self, ticket: Ticket) -> None:
        """On the hashing thread, as the hash ends (or fails)."""
        with self._lock:
            if ticket.started is not None:
                self._finished += 1
                self._hashing += time.monotonic() - ticket.started

    def withdraw(self, ticket: Ticket) -> None:
        """When the caller is done, or gave up (cancelled) before a thread took it."""
        with self._lock:
            if ticket.open:
                ticket.open = False
                self._waiting -= 1

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                self._waiting, self._started, self._waited, self._finished, self._hashing
            )


@dataclass(frozen=True)
class Snapshot:
    waiting: int  # now
    started: int  # since start-up, as the seconds below
    waited_seconds: float
    finished: int
    hashing_seconds: float


class HashingLoadCollector(Collector):
    """Read at each scrape: the numbers live with the hashing pool, one per process."""

    def __init__(self, load: HashingLoad) -> None:
        self._load = load

    def collect(self) -> Iterator[Metric]:
        now = self._load.snapshot()
        yield GaugeMetricFamily(
            "password_hashes_waiting",
            "Password hashes (logins, sign-ups, password changes) waiting for a hashing "
            "thread now.",
            value=now.waiting,
        )
        yield SummaryMetricFamily(
            "password_hash_wait_seconds",
            "Time password hashes waited for a hashing thread, since start-up.",
            count_value=now.started,
            sum_value=now.waited_seconds,
        )
        yield SummaryMetricFamily(
            "password_hash_seconds",
            "Time password hashes took on their thread, since start-up: longer while other "
            "work keeps the CPUs busy (hashing runs at the lowest CPU priority).",
            count_value=now.finished,
            sum_value=now.hashing_seconds,
        )
