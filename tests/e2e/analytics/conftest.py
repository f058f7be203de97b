"""Fixtures of the analytics end-to-end tests."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.bus.kafka_options import client_options
from shared.bus.scratch import wait_for_leaders
from shared.config import PlatformSettings
from shared.events import dlq_of
from tests.support.clock import seconds_to_clear_midnight, seconds_to_clear_the_hour

# Longer than any of these tests takes, with room for a slow run.
LONGEST_TEST = timedelta(minutes=4)
# Longer than a test takes to send the visits it counts per hour (a few dozen beacons).
SENDING = timedelta(seconds=60)
# The most the guards below wait (the midnight one; the hour's is shorter, and never
# comes on top of it: a wait past midnight ends just after a new hour began).
MOST_WAITED = math.ceil(LONGEST_TEST.total_seconds()) + 5
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The guards wait inside the test's time limit (pytest-timeout times fixtures too):
    each test here gets its limit plus the longest wait."""
    for item in items:
        if HERE not in item.path.resolve().parents:
            continue  # a hook of this conftest sees every test of the session
        marker = item.get_closest_marker("timeout")
        if marker is not None:
            limit = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
            extra = {k: v for k, v in marker.kwargs.items() if k != "timeout"}
            rest = marker.args[1:]
        else:
            # As pytest-timeout reads it: the option, else the variable, else the ini.
            limit = config.getoption("timeout", None)
            if limit is None:
                limit = os.environ.get("PYTEST_TIMEOUT") or config.getini("timeout")
            extra, rest = {}, ()
        if limit in (None, "") or float(limit) <= 0:
            continue  # no time limit at all
        timeout = pytest.mark.timeout(float(limit) + MOST_WAITED, *rest, **extra)
        item.add_marker(timeout, append=False)  # the closest: it is the one read


@pytest.fixture(autouse=True)
async def _not_across_midnight() -> None:
    """A test counting visits per day must not straddle two days: at midnight the day
    window and the visitor salt change by design, and the counts split."""
    await asyncio.sleep(seconds_to_clear_midnight(datetime.now(UTC), LONGEST_TEST))


@pytest.fixture
async def not_across_the_hour(_not_across_midnight: None) -> None:
    """For a test counting visitors per hour (``usefixtures``): its visits must all come
    in one hour, else each hour counts the same visitors again and the sum is off."""
    await asyncio.sleep(seconds_to_clear_the_hour(datetime.now(UTC), SENDING))


@pytest.fixture
async def visits_topic(settings: PlatformSettings) -> AsyncIterator[str]:
    """A scratch ``analytics.visits.<id>`` (3 partitions) and its DLQ: a name the visit
    events may be read from (``shared.bus.delivery.belongs_on``)."""
    name = f"analytics.visits.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1), NewTopic(dlq_of(name), 1, 1)])
        await wait_for_leaders(admin, [name, dlq_of(name)])
        yield name
        await admin.delete_topics([name, dlq_of(name)])
    finally:
        await admin.close()
