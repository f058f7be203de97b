import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import (
    Envelope,
    EnvelopeWriter,
    EventSchemaViolation,
    InvalidEnvelope,
    UnknownEventType,
    decode_envelope,
    encode_envelope,
    envelope_for,
    parse_event,
    registered_events,
)
from shared.events.catalogue.accounts import ContactCardChanged, UserRegistered
from shared.events.catalogue.analytics import VisitRecorded
from shared.events.catalogue.selftest import ProbeRecorded


def test_an_event_survives_the_wire() -> None:
    event = UserRegistered(user_id=uuid4(), age_band="adult")
    envelope = envelope_for(event, source="accounts", subject=str(event.user_id))

    decoded = decode_envelope(encode_envelope(envelope))

    assert decoded == envelope
    assert parse_event(decoded) == event
    assert decoded.type == "user.registered.v1"
    assert decoded.key() == str(event.user_id).encode()


@given(key=st.text(min_size=1, max_size=40), seq=st.integers(min_value=0, max_value=2**62))
def test_any_probe_round_trips(key: str, seq: int) -> None:
    envelope = envelope_for(ProbeRecorded(key=key, seq=seq), source="bus", subject=key)
    assert parse_event(decode_envelope(encode_envelope(envelope))) == ProbeRecorded(
        key=key, seq=seq
    )


def test_headers_repeat_id_and_type_for_dead_letter_readers() -> None:
    envelope = envelope_for(ProbeRecorded(key="k", seq=1), source="bus", subject="k")
    assert dict(envelope.headers()) == {
        "ce_id": str(envelope.id).encode(),
        "ce_type": b"bus_probe.recorded.v1",
    }


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "x.v1"}', "envelope invalid"),
        (None, "tombstone"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_unreadable_bytes_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEnvelope, match=reason):
        decode_envelope(raw)


def test_unknown_type_is_refused() -> None:
    envelope = Envelope(type="user.teleported.v1", source="x", data={})
    with pytest.raises(UnknownEventType, match=r"user\.teleported\.v1"):
        parse_event(envelope)


def test_schema_violation_names_the_field_but_not_the_value() -> None:
    envelope = Envelope(
        type="contact_card.changed.v1",
        source="accounts",
        data={
            "user_id": str(uuid4()),
            "email": "jane.doe.at.example",
            "name": "Jane",
            "age_band": "adult",
        },
    )
    with pytest.raises(EventSchemaViolation) as caught:
        parse_event(envelope)
    assert "email" in str(caught.value)
    assert "jane.doe" not in str(caught.value)


def test_readers_ignore_fields_they_do_not_know() -> None:
    user_id = uuid4()
    data = {"user_id": str(user_id), "age_band": "adult", "added_in_a_later_release": 1}
    envelope = Envelope(type="user.registered.v1", source="accounts", data=data)
    assert parse_event(envelope) == UserRegistered(user_id=user_id, age_band="adult")


def test_events_are_frozen() -> None:
    event = ProbeRecorded(key="k", seq=1)
    with pytest.raises(ValueError, match="frozen"):
        event.seq = 2  # type: ignore[misc]


def test_every_registered_event_is_versioned_and_named_in_the_past_or_imperative() -> None:
    for type_name, cls in registered_events().items():
        assert type_name == f"{cls.event_name}.v{cls.version}"
        assert cls.kind in ("event", "command")
        if cls.kind == "event":
            assert cls.event_name.split(".")[-1].endswith("ed"), type_name


def test_only_the_contacts_topic_carries_personal_fields() -> None:
    personal = {"email", "name", "phone", "address"}
    for cls in registered_events().values():
        if personal & set(cls.model_fields):
            assert cls.topic.name == "accounts.contacts", cls.type_name()
    assert ContactCardChanged.topic.compacted


def test_envelope_json_is_cloudevents_shaped() -> None:
    envelope = envelope_for(ProbeRecorded(key="k", seq=1), source="bus", subject="k")
    body = json.loads(encode_envelope(envelope))
    assert {"specversion", "id", "type", "source", "time", "subject", "data"} <= set(body)
    assert body["specversion"] == "1.0"


@given(
    key=st.text(max_size=40),
    seq=st.integers(min_value=0, max_value=2**62),
    subject=st.none() | st.text(max_size=20),
    traceparent=st.none() | st.text(max_size=60),
)
def test_an_envelope_writer_writes_what_envelope_for_does(
    key: str, seq: int, subject: str | None, traceparent: str | None
) -> None:
    event = ProbeRecorded(key=key, seq=seq)
    time = datetime.now(UTC)
    writer = EnvelopeWriter(ProbeRecorded, source="bus", subject=subject, time=time,
                            traceparent=traceparent)  # fmt: skip
    first, second = writer.encode(event), writer.encode(event)

    value, headers = first
    written = decode_envelope(value)
    expected = envelope_for(event, source="bus", subject=subject, traceparent=traceparent)
    expected = expected.model_copy(update={"id": written.id, "time": time})
    assert value == encode_envelope(expected)  # byte for byte
    assert headers == expected.headers()
    assert writer.key == expected.key()
    assert parse_event(written) == event
    assert decode_envelope(second[0]).id != written.id  # a new id each time


def test_an_envelope_writer_writes_a_visit_as_envelope_for_does_whatever_its_subject() -> None:
    visit = VisitRecorded(
        beacon_id=uuid4(),
        visitor_hash="0" * 32,
        site="imt.example",
        page="/repair",
        referrer_host=None,
        device_class="mobile",
        load_time_ms=None,
        occurred_at=datetime.now(UTC),
    )
    time = datetime.now(UTC)
    # A subject holding the writer's own probe id must not confuse the splice.
    for subject in (None, "00000000-0000-0000-0000-000000000000", 'a "quoted" subject'):
        writer = EnvelopeWriter(VisitRecorded, source="analytics", subject=subject, time=time)
        value, _ = writer.encode(visit)
        expected = envelope_for(visit, source="analytics", subject=subject)
        expected = expected.model_copy(update={"id": decode_envelope(value).id, "time": time})
        assert value == encode_envelope(expected)


def test_an_envelope_writer_takes_only_its_own_event_type() -> None:
    writer = EnvelopeWriter(ProbeRecorded, source="bus", subject=None)
    with pytest.raises(TypeError):
        writer.encode(UserRegistered(user_id=uuid4(), age_band="adult"))
