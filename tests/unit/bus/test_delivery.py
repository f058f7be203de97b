from uuid import uuid4

import pytest

from shared.bus import Delivery, Rejected, Tombstone, read_record
from shared.bus.dead_letters import dead_letter_headers, original_headers
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.accounts import UserRegistered
from shared.events.catalogue.selftest import ProbeRecorded


def _probe_bytes() -> bytes:
    return encode_envelope(envelope_for(ProbeRecorded(key="k", seq=1), source="t", subject="k"))


def test_a_valid_record_is_delivered_with_its_event() -> None:
    read = read_record(_probe_bytes(), b"k", "bus.selftest", 0, 7)
    assert isinstance(read, Delivery)
    assert read.event == ProbeRecorded(key="k", seq=1)
    assert (read.topic, read.partition, read.offset) == ("bus.selftest", 0, 7)


def test_a_null_value_is_a_tombstone() -> None:
    assert read_record(None, b"user", "accounts.contacts", 1, 2) == Tombstone(
        b"user", "accounts.contacts", 1, 2
    )


@pytest.mark.parametrize("topic", ["analytics.trends", "accounts.contacts.5f2c", "bus.selftest.x"])
def test_a_null_value_is_a_tombstone_where_the_topic_takes_them(topic: str) -> None:
    assert isinstance(read_record(None, b"k", topic, 0, 0), Tombstone)


@pytest.mark.parametrize(
    "topic", ["deletion.commands", "notifier.commands", "analytics.visits", "policy.versions.x"]
)
def test_a_null_value_elsewhere_is_rejected_not_passed_over(topic: str) -> None:
    """No handler acts on a tombstone there: acknowledged, the record would vanish
    without a trace. Rejected, it is dead-lettered with the reason."""
    read = read_record(None, b"k", topic, 0, 0)
    assert isinstance(read, Rejected)
    assert "without a value" in read.reason
    assert "not compacted" in read.reason


def test_a_null_value_on_a_topic_not_registered_here_is_a_tombstone() -> None:
    assert isinstance(read_record(None, b"k", "someone.elses", 0, 0), Tombstone)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"garbage", "not JSON"),
        (b'{"type":"nope.v1","source":"t","data":{}}', "unknown event type"),
        (b'{"type":"bus_probe.recorded.v1","source":"t","data":{"key":"k"}}', "seq"),
    ],
)
def test_poison_is_rejected_with_a_reason(value: bytes, reason: str) -> None:
    read = read_record(value, None, "bus.selftest", 0, 0)
    assert isinstance(read, Rejected)
    assert reason in read.reason


def test_an_event_on_the_wrong_topic_is_rejected() -> None:
    envelope = envelope_for(
        UserRegistered(user_id=uuid4(), age_band="adult"), source="t", subject=None
    )
    read = read_record(encode_envelope(envelope), None, "bus.selftest", 0, 0)
    assert isinstance(read, Rejected)
    assert "does not belong" in read.reason


class _Record:
    topic, partition, offset, key, value = "bus.selftest", 3, 42, b"k", b"v"


def test_dead_letter_headers_keep_the_original_and_add_why() -> None:
    headers = dead_letter_headers(_Record(), [("ce_type", b"x.v1")], "not JSON", "c1")
    as_dict = dict(headers)
    assert as_dict["dlq_reason"] == b"not JSON"
    assert as_dict["dlq_source_topic"] == b"bus.selftest"
    assert as_dict["dlq_source_offset"] == b"42"
    assert original_headers(headers) == [("ce_type", b"x.v1")]
