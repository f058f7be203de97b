"""A dead letter's reason says why, never what: it is kept for weeks in a Kafka header."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, Field, ValidationError

from shared.bus import consumer as consumer_module
from shared.bus import replay
from shared.bus.consumer import ConsumerSettings, IdempotentConsumer, Unprocessable
from shared.bus.dead_letters import H_REASON, H_VALUE_OMITTED, dead_letter_headers, fitted
from shared.bus.delivery import Tombstone
from shared.events.topics import LETTER_MAX_BYTES, RECORD_MAX_BYTES, dead_letter_topics

NAME = "Jane Roe"
EMAIL = "jane.roe@example.com"
PASSWORD = "hunter2!"


class _Login(BaseModel):
    password: str = Field(min_length=12)


def _validation_error() -> ValidationError:
    try:
        _Login(password=PASSWORD)
    except ValidationError as exc:
        return exc
    raise AssertionError("the password is too short to pass")


def _errors() -> list[Exception]:
    """Errors whose text quotes the record they were raised for."""
    return [
        asyncpg.DataError(f"invalid input for query argument $1: '{NAME}' (expected int)"),
        _validation_error(),
        KeyError(EMAIL),
        Unprocessable(f"no contact for {EMAIL}"),
    ]


class _Record:
    topic, partition, offset, key, value = "bus.selftest", 3, 42, b"k", b"v"
    timestamp, headers = 1.0, ()


def _leaks(text: str) -> list[str]:
    return [value for value in (NAME, EMAIL, PASSWORD) if value in text]


@pytest.mark.promise("P-01")
@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
def test_the_reason_header_never_quotes_the_record(error: Exception) -> None:
    headers = dead_letter_headers(_Record(), [], f"failed: {error}", "c1")

    reason = dict(headers)[H_REASON].decode()
    assert _leaks(reason) == []
    assert reason.startswith("failed: ")


class _Consumer:
    """As much of aiokafka's consumer as IdempotentConsumer's constructor uses."""

    def subscription(self) -> set[str]:
        return {_Record.topic}

    def subscribe(self, topics: list[str], listener: object) -> None:
        pass


class _Producer:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def send_and_wait(self, topic: str, **record: Any) -> None:
        self.reasons.append(dict(record["headers"])[H_REASON].decode())


class _Pool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


@pytest.mark.promise("P-01")
@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
async def test_a_failing_event_is_dead_lettered_and_logged_without_its_content(
    error: Exception, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def not_processed(*_: object) -> bool:
        return False

    async def marked(*_: object) -> list[object]:
        return []

    async def fail(*_: object) -> None:
        raise error

    monkeypatch.setattr(consumer_module, "was_processed", not_processed)
    monkeypatch.setattr(consumer_module, "mark_processed", marked)
    producer = _Producer()
    consumer = IdempotentConsumer(
        "c1",
        _Consumer(),
        producer,
        _Pool(),  # type: ignore[arg-type]
        fail,
        ConsumerSettings(max_attempts=1, backoff_seconds=0),
    )
    monkeypatch.setattr(consumer, "_apply", fail)
    item = Tombstone(b"k", _Record.topic, _Record.partition, _Record.offset)

    # No log configuration here: the reason itself must be clean, not just the JSON line.
    with caplog.at_level(logging.WARNING, logger=consumer_module.__name__):
        await consumer._apply_alone(item, [_Record()])

    [reason] = producer.reasons
    assert _leaks(reason) == []
    assert _leaks(caplog.text) == []
    assert reason in caplog.text
    kind = f"handler failed 1 times: {type(error).__name__}: "
    assert reason.startswith("unprocessable: " if isinstance(error, Unprocessable) else kind)
    assert consumer.dead_lettered == 1


def test_a_letter_that_fits_its_dlq_keeps_its_value() -> None:
    headers = dead_letter_headers(_Record(), [], "x" * 5_000, "c1")  # the longest reason
    value = b"v" * RECORD_MAX_BYTES  # the largest a topic holds
    assert fitted(b"k", value, headers) == (value, headers)


def test_a_letter_too_large_for_its_dlq_leaves_its_value_out_and_says_so() -> None:
    headers = dead_letter_headers(_Record(), [], "not JSON", "c1")
    value, kept = fitted(b"k", b"v" * (LETTER_MAX_BYTES + 1), headers)
    assert value is None
    assert kept == [*headers, (H_VALUE_OMITTED, str(LETTER_MAX_BYTES + 1).encode())]


def test_the_replay_skips_a_letter_without_its_value() -> None:
    """Replayed, it would be a record without a value: on a compacted topic, a tombstone."""
    headers = dead_letter_headers(_Record(), [], "not JSON", "c1")
    _, kept = fitted(b"k", b"v" * (LETTER_MAX_BYTES + 1), headers)
    letter = SimpleNamespace(topic="bus.selftest.dlq", partition=0, offset=5, headers=kept)
    why = replay._omitted(letter)
    assert why is not None
    assert "bus.selftest[3]@42" in why
    intact = SimpleNamespace(topic="bus.selftest.dlq", partition=0, offset=6, headers=headers)
    assert replay._omitted(intact) is None


def test_every_dlq_takes_the_largest_letter() -> None:
    for topic in dead_letter_topics():
        assert int(topic.config()["max.message.bytes"]) > LETTER_MAX_BYTES > RECORD_MAX_BYTES
