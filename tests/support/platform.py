"""Fixtures for end-to-end tests: every service process running behind the gateway.

Processes come from ``services/*/Procfile``; those already running (``make run``) are
reused, those started here are stopped at the end of the session. IMT_TEST_SERVICES
(comma separated, e.g. ``accounts,notifier``) narrows which services start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deploy.local import services
from deploy.local.layout import HOST, Layout

OUTBOX_GAUGES = ("outbox_backlog", "outbox_oldest_seconds")

# Every test client reaches the gateway from 127.0.0.1: the per-address login throttle
# would make unrelated tests wait on each other's failures, whichever suites a run picks
# (the browser's alone too). The per-account throttle is what tests exercise; the
# per-address rules are unit-tested.
os.environ.setdefault("IMT_ACCOUNTS_CLIENT_FREE_FAILURES", "1000000")
# A campaign waits for opt-outs in flight: 10 s by default, for a contact card that comes
# ~0.1 s after the account's answer. 2 s still covers it twentyfold (the opt-out journey
# sends a campaign at once after the choice), and the suites send dozens of campaigns.
os.environ.setdefault("IMT_NOTIFIER_MARKETING_SETTLE_SECONDS", "2")


def metric_samples(metrics_text: str) -> dict[str, float]:
    """Every sample of a /metrics page, keyed by series as printed: ``name{labels}``."""
    return {
        series: float(value)
        for series, _, value in (line.rpartition(" ") for line in metrics_text.splitlines())
        if series and not series.startswith("#")
    }


def outbox_gauges(metrics_text: str) -> dict[str, float]:
    """The outbox gauges of a service's /metrics page, by name."""
    samples = metric_samples(metrics_text)
    return {name: samples[name] for name in OUTBOX_GAUGES if name in samples}


def selected_processes() -> list[str]:
    """Procfile process names of the services this run tests (IMT_TEST_SERVICES)."""
    wanted = {s for s in os.environ.get("IMT_TEST_SERVICES", "").split(",") if s}
    return [n for n in services.procfile_entries() if not wanted or n.split("-")[0] in wanted]


def selected_apis() -> list[str]:
    return sorted(n.removesuffix("-api") for n in selected_processes() if n.endswith("-api"))


@pytest.fixture(scope="session")
def platform(stack: None) -> Iterator[str]:
    """The gateway's base URL, once every service API answers ready on its own port."""
    names = selected_processes()
    started = services.ensure_processes(names)
    try:
        services.wait_for_apis(selected_apis())
        yield f"http://{HOST}:{Layout.from_env().ports.gateway}"
    finally:
        services.stop_processes(started)
