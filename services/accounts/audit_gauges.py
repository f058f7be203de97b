"""The audit log's tamper evidence, watched: ``/metrics`` says whether the chain holds.

A hash chain shows tampering only to someone who checks it. At each scrape the accounts
API checks that the last row it checked still has the link it had (rows cut from the
end, new ones in their place, show only there), then the rows added since (a few
links), and the whole chain again once the last full check is older than
``IMT_ACCOUNTS_AUDIT_FULL_CHECK_SECONDS``: a row changed after it was checked shows at
the next full check. The AuditChainBroken alert pages on ``audit_chain_intact == 0``;
``make audit-verify`` also holds the chain against the links on Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from services.accounts.audit_chain import ChainReport, verify
from shared.service import Runtime


class AuditChainGauges:
    def __init__(
        self,
        registry: CollectorRegistry,
        full_check_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.intact = Gauge(
            "audit_chain_intact",
            "1 while the operator audit log's hash chain holds; 0 once a row was found "
            "changed, removed or slipped in (GET /operator/audit/verify says where).",
            registry=registry,
        )
        self.rows = Gauge(
            "audit_chain_rows", "Audit rows whose links the last check covered.", registry=registry
        )
        self.full_check_age = Gauge(
            "audit_chain_full_check_age_seconds",
            "Time since the whole chain was last checked.",
            registry=registry,
        )
        self._every = full_check_seconds
        self._clock = clock
        self._checked: ChainReport | None = None  # the last check's report, when intact
        self._full_at = 0.0

    async def refresh(self, runtime: Runtime) -> None:
        now = self._clock()
        full = self._checked is None or now - self._full_at >= self._every
        async with runtime.pool.acquire() as conn:
            report = await verify(conn, None if full else self._checked)
        if full:
            self._full_at = now
        # Broken, the next check is a full one again: the chain must be checked whole
        # before it is said to hold (after a restore from a backup, say).
        self._checked = report if report.intact else None
        self.intact.set(1 if report.intact else 0)
        self.rows.set(report.rows)
        self.full_check_age.set(now - self._full_at)
