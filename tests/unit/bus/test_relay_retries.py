"""What the relay sets aside for good, and what it keeps and tries again."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
    UnknownProducerId,
)

from shared.bus.relay import OutboxRelay, RelaySettings, _refusal


@pytest.mark.parametrize("error", [MessageSizeTooLargeError, RecordTooLargeError])
def test_a_record_too_large_is_refused_for_good(error: type[KafkaError]) -> None:
    assert _refusal(error("too big")).startswith(error.__name__)


@pytest.mark.parametrize(
    "error",
    [
        KafkaTimeoutError,  # not "retriable" to aiokafka: the broker was away too long
        KafkaConnectionError,
        OutOfOrderSequenceNumber,  # the idempotent producer's sequence, not the record
        UnknownProducerId,
    ],
)
def test_errors_a_later_batch_gets_past_are_raised_not_set_aside(
    error: type[KafkaError],
) -> None:
    with pytest.raises(error):
        _refusal(error())


class _KafkaAwayTwice(OutboxRelay):
    """A relay whose batches fail twice, as while the broker is away, then go."""

    def __init__(self) -> None:
        quick = RelaySettings(retry_seconds=0.001, retry_max_seconds=0.002)
        super().__init__("postgresql://unused", producer=None, settings=quick)
        self.attempts = 0
        self.waits: list[float] = []

    async def publish_batch(self, conn: Any) -> int:
        self.attempts += 1
        if self.attempts <= 2:
            raise KafkaTimeoutError()
        return 7

    async def _pause(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_a_batch_kafka_did_not_take_is_tried_again_after_a_growing_wait() -> None:
    relay = _KafkaAwayTwice()
    assert await relay.publish_or_wait(None) is None  # type: ignore[arg-type]
    assert await relay.publish_or_wait(None) is None  # type: ignore[arg-type]
    assert await relay.publish_or_wait(None) == 7  # type: ignore[arg-type]
    assert relay.waits == [0.001, 0.002]
    assert relay.published == 0  # publish_batch counts; nothing was counted twice
