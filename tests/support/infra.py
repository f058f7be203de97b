"""Fixtures for tests that need the real stack: it is started here, by the test run.

``ensure_up`` reuses a stack that ``make run`` (or an earlier test run) already
started; what this session started itself is left running for the next run unless
IMT_TEST_STOP_STACK=1 (CI sets it through the Makefile) and no ``make run`` holds the
stack (that one stops it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from shared.bus.scratch import ADMIN_ROLE, admin_dsn, scratch_database
from shared.bus.scratch import scratch_topic as new_scratch_topic
from shared.config import PlatformSettings

__all__ = ["ADMIN_ROLE", "admin_dsn", "scratch_dsn", "scratch_topic", "settings", "stack"]


@pytest.fixture(scope="session")
def stack() -> Iterator[None]:
    from deploy.local import stack as local_stack

    # Every test client shares 127.0.0.1: the gateway's per-client limit must not bite.
    os.environ.setdefault("IMT_GATEWAY_RATE_PER_SECOND", "5000")
    local_stack.ensure_up(["kafka", "postgres", "smtp", "gateway"])
    yield
    stop_if_asked()


def stops_stack_after() -> bool:
    """IMT_TEST_STOP_STACK=1 asks for the stack to be stopped after the run, unless a
    ``make run`` holds it (its services would lose Kafka and PostgreSQL under them)."""
    from deploy.local import services
    from deploy.local.layout import Layout

    if os.environ.get("IMT_TEST_STOP_STACK") != "1":
        return False
    return not services.make_run_active(Layout.from_env())


def stop_if_asked() -> bool:
    """Stop the stack if :func:`stops_stack_after` says so; whether it was stopped. At
    the session's end, and from the Makefile after pytest whatever its outcome: a
    collection error, or a start that failed half-way, leave no session end."""
    from deploy.local import stack as local_stack

    if not stops_stack_after():
        return False
    local_stack.shut_down()
    return True


@pytest.fixture(scope="session")
def prometheus(stack: None) -> str:
    """Prometheus scraping the platform and evaluating its alert rules; its address."""
    from deploy.local import prometheus as local_prometheus
    from deploy.local import stack as local_stack
    from deploy.local.layout import Layout

    local_stack.ensure_up(["prometheus"])
    return local_prometheus.url(Layout.from_env())


@pytest.fixture(scope="session")
def settings(stack: None) -> PlatformSettings:
    return PlatformSettings(environment="test")


@pytest.fixture
async def scratch_dsn(settings: PlatformSettings) -> AsyncIterator[str]:
    """A new database with the bus tables, dropped after the test."""
    async with scratch_database(settings) as dsn:
        yield dsn


@pytest.fixture
async def scratch_topic(settings: PlatformSettings) -> AsyncIterator[str]:
    """A fresh ``bus.selftest.<id>`` topic with its DLQ, deleted after the test."""
    async with new_scratch_topic(settings) as name:
        yield name


if __name__ == "__main__":
    if sys.argv[1:] != ["stop-if-asked"]:
        sys.exit("usage: python -m tests.support.infra stop-if-asked")
    if stop_if_asked():
        print("stack stopped (IMT_TEST_STOP_STACK=1)")
