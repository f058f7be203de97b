"""The sealed contact card on the wire, and the card it opens to."""

from uuid import uuid4

import pytest
from pydantic import ValidationError

from shared.contact_card import OpenCard
from shared.events import EventSchemaViolation, decode_envelope, encode_envelope, parse_event
from shared.events.catalogue.accounts import ContactCardChanged
from shared.events.registry import envelope_for


def test_sealed_fields_cross_the_wire_as_base64_and_come_back_as_bytes() -> None:
    sealed = bytes(range(256))  # any bytes a cipher may give, none of them text
    card = ContactCardChanged(user_id=uuid4(), email=sealed, name=b"\x00n", age_band="adult")
    raw = encode_envelope(envelope_for(card, source="accounts", subject=str(card.user_id)))
    assert b'"email":"AAECAwQF' in raw
    assert parse_event(decode_envelope(raw)) == card


def test_a_sealed_field_that_is_not_base64_is_a_schema_violation() -> None:
    card = ContactCardChanged(user_id=uuid4(), email=b"x", name=b"y", age_band="adult")
    envelope = envelope_for(card, source="accounts", subject=str(card.user_id))
    envelope = envelope.model_copy(update={"data": {**envelope.data, "email": "not base64!"}})
    with pytest.raises(EventSchemaViolation, match="email"):
        parse_event(envelope)


def test_a_card_that_opens_to_a_bad_address_is_refused() -> None:
    with pytest.raises(ValidationError, match="email"):
        OpenCard(user_id=uuid4(), email="no-at-sign", name="A", age_band="adult")
    with pytest.raises(ValidationError, match="name"):
        OpenCard(user_id=uuid4(), email="a@example.com", name="x" * 201, age_band="adult")


def test_a_card_from_before_pending_addresses_reads_as_none_pending() -> None:
    card = ContactCardChanged(user_id=uuid4(), email=b"e", name=b"n", age_band="adult")
    envelope = envelope_for(card, source="accounts", subject=str(card.user_id))
    older = {k: v for k, v in envelope.data.items() if k != "pending_email"}
    read = parse_event(envelope.model_copy(update={"data": older}))
    assert isinstance(read, ContactCardChanged)
    assert read.pending_email is None


def test_a_card_whose_pending_address_opens_bad_is_refused() -> None:
    with pytest.raises(ValidationError, match="pending_email"):
        OpenCard(
            user_id=uuid4(), email="a@example.com", name="A", age_band="adult",
            pending_email="not-an-address",
        )  # fmt: skip
