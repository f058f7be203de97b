"""The audit log's tamper evidence, watched: ``/metrics`` says whether the chain holds.

A hash chain shows tampering only to someone who checks it. At each scrape the accounts
API checks that the last row it checked still has the link it had (rows cut from the
end, new ones in their place, show only there), then the rows added since (a few
links); and the whole chain again once the last full check is older than
``IMT_ACCOUNTS_AUDIT_FULL_CHECK_SECONDS``: a row changed after it was checked shows at
the next full check. The AuditChainBroken alert pages on ``audit_chain_intact == 0``;
``make audit-verify`` also holds the chain against the links on Kafka.

A full check reads every row: on a long chain it takes longer than a scrape waits
(shared/observability/health.py), so it runs in the background, across scrapes, while
each scrape goes on checking the new rows. Until a check has finished there is no
``audit_chain_intact`` at all (a 0 would page): ``audit_chain_full_check_age_seconds``,
read at each scrape, then counts from the process's start, and the
AuditChainUnchecked alert tells when no full check finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.accounts.audit_chain import ChainReport, verify
from shared.service import Runtime

log = logging.getLogger(__name__)


class AuditChainGauges:
    def __init__(
        self,
        registry: CollectorRegistry,
        full_check_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = full_check_seconds
        self._clock = clock
        self._since_start = clock()
        self.report: ChainReport | None = None  # the last finished check's
        self._checked: ChainReport | None = None  # the last intact one: checks go on from it
        self._full_at: float | None = None  # when the last full check that finished began
        self._full: asyncio.Task[None] | None = None
        self._breaks = 0  # breaks found so far: a full check begun before one holds no word
        registry.register(_ChainCollector(self))

    def full_check_age(self) -> float:
        """Seconds since the last full check that finished began (since the start, before
        the first one)."""
        return self._clock() - (self._since_start if self._full_at is None else self._full_at)

    async def refresh(self, runtime: Runtime) -> None:
        """At each scrape: the full check started when due (it goes on after the scrape),
        and the rows since the last intact check checked."""
        self._start_full_check_if_due(runtime)
        since = self._checked
        if since is None:
            return
        async with runtime.pool.acquire() as conn:
            report = await verify(conn, since)
        if not report.intact:
            self._broken(report)
        elif self._checked is since:  # else a full check's word came meanwhile
            self._checked = self.report = report

    async def settled(self) -> None:
        """Wait for the full check under way, if any."""
        if self._full is not None:
            await asyncio.wait({self._full})

    async def close(self) -> None:
        """Stop the full check under way: its connection would hold the pool's close."""
        if self._full is not None:
            self._full.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._full

    def _start_full_check_if_due(self, runtime: Runtime) -> None:
        if self._full is not None and not self._full.done():
            return
        # Broken, the next check is a full one again: the chain must be checked whole
        # before it is said to hold (after a restore from a backup, say).
        due = self._checked is None or self.full_check_age() >= self.every
        if due:
            self._full = asyncio.create_task(self._full_check(runtime), name="audit-full-check")

    async def _full_check(self, runtime: Runtime) -> None:
        began, breaks = self._clock(), self._breaks
        try:
            async with runtime.pool.acquire() as conn:
                report = await verify(conn)
        except Exception as exc:  # the age grows, and AuditChainUnchecked tells in time
            # The type only: a driver's error may quote a DSN or a query.
            log.warning("audit chain full check failed (%s)", type(exc).__name__)
            return
        self._full_at = began
        if not report.intact:
            self._broken(report)
        elif self._breaks == breaks:
            self._checked = self.report = report

    def _broken(self, report: ChainReport) -> None:
        self._breaks += 1
        self._checked = None
        self.report = report


class _ChainCollector(Collector):
    """The gauges as the last checks left them, read at each scrape."""

    def __init__(self, gauges: AuditChainGauges) -> None:
        self._gauges = gauges

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families(None, 0.0))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = self._gauges
        return iter(self._families(gauges.report, gauges.full_check_age()))

    def _families(self, report: ChainReport | None, age: float) -> list[GaugeMetricFamily]:
        intact = GaugeMetricFamily(
            "audit_chain_intact",
            "1 while the operator audit log's hash chain holds; 0 once a row was found "
            "changed, removed or slipped in (GET /operator/audit/verify says where). None "
            "before the first check has finished.",
        )
        rows = GaugeMetricFamily(
            "audit_chain_rows", "Audit rows whose links the last check covered."
        )
        if report is not None:
            intact.add_metric([], 1 if report.intact else 0)
            rows.add_metric([], report.rows)
        return [
            intact,
            rows,
            GaugeMetricFamily(
                "audit_chain_full_check_age_seconds",
                "Time since the last whole-chain check that finished began (since the"
                " process started, before the first).",
                value=age,
            ),
            GaugeMetricFamily(
                "audit_chain_full_check_interval_seconds",
                "How often the whole chain is checked (IMT_ACCOUNTS_AUDIT_FULL_CHECK_SECONDS).",
                value=self._gauges.every,
            ),
        ]
