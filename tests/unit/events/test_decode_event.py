"""decode_event reads a valid record in one pass, exactly as the two-step reading would."""

import inspect
from datetime import UTC
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import (
    Envelope,
    Event,
    EventSchemaViolation,
    InvalidEnvelope,
    UnknownEventType,
    decode_envelope,
    decode_event,
    encode_envelope,
    envelope_for,
    parse_event,
    registered_events,
)
from shared.events import registry as registry_module
from shared.events.topics import BUS_SELFTEST

EVENT_TYPES = sorted(registered_events().items())


def _events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Valid instances of ``cls``: hypothesis builds its fields from their types, with
    the patterns, emails and aware times it cannot read from pydantic's metadata given
    here."""
    overrides: dict[str, st.SearchStrategy[Any]] = {}
    properties = cls.model_json_schema().get("properties", {})
    for name, field in properties.items():
        options = [field, *field.get("anyOf", [])]
        formats = {o.get("format") for o in options}
        if "email" in formats:
            overrides[name] = st.emails()
        if "date-time" in formats:  # with an offset: AwareDatetime fields need one
            overrides[name] = st.datetimes(timezones=st.just(UTC))
        pattern = next((o["pattern"] for o in options if "pattern" in o), None)
        if pattern is not None:
            overrides[name] = st.from_regex(pattern, fullmatch=True)
    return st.builds(_valid_or_none(cls), **overrides).filter(lambda e: e is not None)


def _valid_or_none(cls: type[Event]) -> Any:
    """``cls`` as a builder that answers None for what its own validators refuse (control
    characters in a visit's texts, say), so hypothesis draws again."""

    def build(**fields: Any) -> Event | None:
        try:
            return cls(**fields)
        except ValidationError:
            return None

    build.__signature__ = inspect.signature(cls)  # type: ignore[attr-defined]
    return build


@pytest.mark.parametrize(("type_name", "cls"), EVENT_TYPES, ids=[t for t, _ in EVENT_TYPES])
def test_every_event_type_is_read_in_one_pass_as_the_two_step_reading_reads_it(
    type_name: str, cls: type[Event]
) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(event=_events_of(cls), subject=st.none() | st.text(min_size=1, max_size=40))
    def check(event: Event, subject: str | None) -> None:
        envelope = envelope_for(event, source="test", subject=subject, traceparent=None)
        raw = encode_envelope(envelope)

        attributes, read = decode_event(raw)

        # The one-pass reading answered: the fallback would give a plain Envelope.
        assert not isinstance(attributes, Envelope), f"{type_name} fell back to two steps"
        assert type(read) is cls
        assert read == parse_event(decode_envelope(raw)) == event
        assert attributes.model_dump(exclude={"data"}) == envelope.model_dump(exclude={"data"})

    check()


def test_the_catalogue_is_loaded_so_the_parametrisation_covers_it() -> None:
    assert len(EVENT_TYPES) >= 20


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"garbage", InvalidEnvelope, "not JSON"),
        (None, InvalidEnvelope, "tombstone"),
        (b'{"type":"x.v1","source":"t","data":[]}', InvalidEnvelope, "data"),
        (b'{"type":"nope.v1","source":"t","data":{}}', UnknownEventType, "unknown event type"),
        (
            b'{"type":"bus_probe.recorded.v1","source":"t","data":{"key":"k"}}',
            EventSchemaViolation,
            "bus_probe.recorded.v1 data invalid: seq: Field required",
        ),
    ],
)
def test_what_one_pass_refuses_fails_with_the_two_step_reason(
    raw: bytes | None, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        decode_event(raw)


class _LateEvent(Event):
    event_name: ClassVar[str] = "late.registered"
    version: ClassVar[int] = 1
    topic = BUS_SELFTEST
    user_id: UUID


def test_a_type_registered_after_the_union_was_built_joins_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A registry of our own, so the late type is gone again for every other test.
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    monkeypatch.setattr(registry_module, "_typed", list(registry_module._typed))
    built = registry_module._typed_envelopes()
    registry_module.register_event(_LateEvent)
    event = _LateEvent(user_id=uuid4())

    attributes, read = decode_event(encode_envelope(envelope_for(event, source="t", subject=None)))

    assert read == event
    assert not isinstance(attributes, Envelope)  # read in one pass: the union was rebuilt
    assert registry_module._typed_envelopes() is not built
