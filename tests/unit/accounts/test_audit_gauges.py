"""The audit chain's gauges, scraped as Prometheus does (GET /metrics, which waits a few
seconds for them): no false page before the first check, and a whole-chain check that
outlasts a scrape neither stops the checks of new rows nor goes unnoticed.
The chain itself is checked against PostgreSQL in tests/integration/accounts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.accounts import audit_gauges
from services.accounts.audit_chain import ChainReport
from shared.observability import Metrics, health_router
from shared.service import Runtime
from tests.unit.observability.conftest import client_for

SCRAPE_WAITS = 0.2  # the /metrics handler's limit (2 s in the services)
LONG = 3 * SCRAPE_WAITS  # a whole-chain check on a long chain
INTACT = ChainReport(rows=10, head_seq=10, head="ab")


class _Pool:
    """A pool whose connections are ``None`` (the fake verify uses none), or whose
    ``acquire`` fails as a database briefly out of reach does."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        if self.error is not None:
            raise self.error
        yield None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Chain:
    """audit_chain.verify's stand-in: records each check; a full one takes
    ``full_seconds``, an incremental one answers ``added`` at once."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.full_seconds = 0.0
        self.full_report = INTACT
        self.added = INTACT

    async def verify(self, _conn: object, since: ChainReport | None = None) -> ChainReport:
        self.calls.append("full" if since is None else "incremental")
        if since is not None:
            return self.added
        await asyncio.sleep(self.full_seconds)
        return self.full_report


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch) -> _Chain:
    fake = _Chain()
    monkeypatch.setattr(audit_gauges, "verify", fake.verify)
    return fake


class _Api:
    """An API's /metrics with the audit gauges refreshed before each scrape."""

    def __init__(self, pool: _Pool, clock: _Clock | None = None) -> None:
        self.metrics = Metrics("accounts-test", CollectorRegistry())
        self.gauges = audit_gauges.AuditChainGauges(
            self.metrics.registry, full_check_seconds=3600, clock=clock or _Clock()
        )
        runtime = cast(Runtime, type("FakeRuntime", (), {"pool": pool})())
        self.app = FastAPI()
        self.app.include_router(
            health_router(
                {}, self.metrics, timeout=SCRAPE_WAITS,
                before_scrape=lambda: self.gauges.refresh(runtime),
            )
        )  # fmt: skip

    async def scrape(self) -> dict[str, float]:
        """The audit_chain samples of one scrape, by name."""
        async with client_for(self.app) as client:
            page = (await client.get("/metrics")).text
        return {
            name: float(value)
            for name, _, value in (line.partition(" ") for line in page.splitlines())
            if name.startswith("audit_chain")
        }

    async def scrape_until(self, name: str, value: float) -> dict[str, float]:
        """Scrapes, as Prometheus makes them, until one shows ``name`` at ``value``."""
        deadline = asyncio.get_running_loop().time() + 10 * LONG
        while (samples := await self.scrape()).get(name) != value:
            assert asyncio.get_running_loop().time() < deadline, samples
            await asyncio.sleep(SCRAPE_WAITS / 2)
        return samples

    async def close(self) -> None:
        await self.gauges.close()


@pytest.fixture
async def api_parts() -> AsyncIterator[list[_Api]]:
    made: list[_Api] = []
    yield made
    for api in made:
        await api.close()


def _api(made: list[_Api], pool: _Pool, clock: _Clock | None = None) -> _Api:
    api = _Api(pool, clock)
    made.append(api)
    return api


async def test_a_check_that_could_not_run_says_nothing_rather_than_broken(
    api_parts: list[_Api],
) -> None:
    """A database out of reach at the first scrape exported 0: AuditChainBroken paged."""
    api = _api(api_parts, _Pool(OSError("database unavailable for a moment")))
    first = await api.scrape()
    await api.gauges.settled()
    again = await api.scrape()
    for samples in (first, again):
        assert "audit_chain_intact" not in samples
        assert "audit_chain_rows" not in samples
        assert samples["audit_chain_full_check_interval_seconds"] == 3600
        assert "audit_chain_full_check_age_seconds" in samples


async def test_a_whole_chain_check_longer_than_a_scrape_waits_still_finishes(
    chain: _Chain, api_parts: list[_Api]
) -> None:
    """Each scrape started the whole check and had it cancelled: 0 for ever."""
    chain.full_seconds = LONG
    api = _api(api_parts, _Pool())
    assert "audit_chain_intact" not in await api.scrape()  # under way, past the scrape
    samples = await api.scrape_until("audit_chain_intact", 1)
    assert samples["audit_chain_rows"] == 10
    assert chain.calls.count("full") == 1  # once, then the new rows only


async def test_new_rows_are_checked_while_a_late_whole_check_runs_and_its_age_shows(
    chain: _Chain, api_parts: list[_Api]
) -> None:
    """Once the hourly whole check outlasted a scrape, every scrape started it again and
    nothing else: new rows went unchecked, and the age stopped moving."""
    clock = _Clock()
    api = _api(api_parts, _Pool(), clock)
    await api.scrape_until("audit_chain_intact", 1)

    clock.now += 3600  # the whole check is due, and takes long now
    chain.full_seconds = LONG
    chain.added = ChainReport(rows=10, head_seq=11, head="", broken_at=11, reason="changed")
    calls = len(chain.calls)
    samples = await api.scrape()
    assert sorted(chain.calls[calls:]) == ["full", "incremental"]
    assert samples["audit_chain_intact"] == 0  # tampering with a new row shows at once
    clock.now += 600
    assert (await api.scrape())["audit_chain_full_check_age_seconds"] == 4200

    # The whole check ends (its age starts again from its beginning); it began before
    # the break, so its word does not clear it.
    samples = await api.scrape_until("audit_chain_full_check_age_seconds", 600)
    assert samples["audit_chain_intact"] == 0


async def test_a_break_a_whole_check_finds_shows_and_holds_until_one_finds_it_intact(
    chain: _Chain, api_parts: list[_Api]
) -> None:
    api = _api(api_parts, _Pool())
    chain.full_report = ChainReport(rows=3, head_seq=3, head="", broken_at=4, reason="gone")
    await api.scrape()
    await api.gauges.settled()
    assert (await api.scrape())["audit_chain_intact"] == 0
    await api.gauges.settled()
    chain.full_report = INTACT  # a restore, say: checked whole again before it holds
    await api.scrape()
    await api.gauges.settled()
    samples = await api.scrape()
    assert (samples["audit_chain_intact"], samples["audit_chain_rows"]) == (1, 10)


async def test_closing_stops_a_whole_check_under_way(chain: _Chain, api_parts: list[_Api]) -> None:
    chain.full_seconds = 60
    api = _api(api_parts, _Pool())
    await api.scrape()
    await asyncio.wait_for(api.gauges.close(), 1)
    assert chain.calls == ["full"]
