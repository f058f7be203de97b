"""Fixtures of the notifier's end-to-end tests (the stack and services are real)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from tests.support.mailbox import Mailbox


@pytest.fixture(scope="session")
async def producer(settings: PlatformSettings) -> AsyncIterator[AIOKafkaProducer]:
    kafka = reliable_producer(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    yield box
    await box.close()


@pytest.fixture
async def api(platform: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        yield client
