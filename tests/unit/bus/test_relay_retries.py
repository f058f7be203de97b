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
def test_errors_not_of_the_record_are_raised_not_set_aside(
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


class _Producer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


class _SequenceBroken(OutboxRelay):
    """A relay whose producer's idempotence state broke: every batch of that producer
    fails, as aiokafka's would; a new producer's go."""

    def __init__(self, renew: bool) -> None:
        self.made: list[_Producer] = []

        async def new_producer() -> Any:
            self.made.append(_Producer(f"new-{len(self.made)}"))
            return self.made[-1]

        quick = RelaySettings(retry_seconds=0.001, retry_max_seconds=0.002)
        super().__init__(
            "postgresql://unused",
            _Producer("first"),
            settings=quick,
            new_producer=new_producer if renew else None,
        )

    async def publish_batch(self, conn: Any) -> int:
        if self.producer.name == "first":
            raise OutOfOrderSequenceNumber()
        return 3

    async def _pause(self, seconds: float) -> None:
        pass


async def test_a_producer_whose_sequence_broke_is_replaced_not_retried_for_ever() -> None:
    relay = _SequenceBroken(renew=True)
    first = relay.producer
    assert await relay.publish_or_wait(None) is None  # type: ignore[arg-type]
    assert first.stopped
    assert relay.producer is relay.made[0]
    assert await relay.publish_or_wait(None) == 3  # type: ignore[arg-type]
    assert relay.renewals == 1


async def test_without_a_way_to_renew_it_the_error_ends_the_relay() -> None:
    with pytest.raises(OutOfOrderSequenceNumber):
        await _SequenceBroken(renew=False).publish_or_wait(None)  # type: ignore[arg-type]
