"""The audit chain's canonical bytes: every field counts, and no text forges a boundary."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.accounts.audit_chain import canonical, link

ROW: dict[str, Any] = {
    "chain_seq": 3,
    "id": 41,
    "operator_id": uuid.UUID(int=1),
    "subject_id": uuid.UUID(int=2),
    "action": "read",
    "fields": ["name", "email"],
    "purpose": "ticket 4411",
    "request_reference": None,
    "at": datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC),
}


def test_the_canonical_form_is_length_prefixed_with_exact_microseconds() -> None:
    micros = (ROW["at"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert (
        canonical(ROW)
        == (
            f"1:3|2:41|36:{ROW['operator_id']}|36:{ROW['subject_id']}|4:read|10:name,email|"
            f"11:ticket 4411|-|{len(str(micros))}:{micros}"
        ).encode()
    )


def test_every_field_changes_the_link() -> None:
    changes = {
        "chain_seq": 4, "id": 42, "operator_id": uuid.UUID(int=9), "subject_id": uuid.UUID(int=9),
        "action": "change", "fields": ["name"], "purpose": "ticket 4412",
        "request_reference": "REQ-1", "at": ROW["at"] + timedelta(microseconds=1),
    }  # fmt: skip
    assert set(changes) == set(ROW)
    original = link(b"", ROW)
    for name, value in changes.items():
        assert link(b"", {**ROW, name: value}) != original, name
    assert link(b"\x01", ROW) != original  # and so does the link before it


def test_text_cannot_pass_for_a_field_boundary_or_a_missing_value() -> None:
    split_one_way = {**ROW, "purpose": "a|1:b", "request_reference": None}
    split_other_way = {**ROW, "purpose": "a", "request_reference": "b"}
    assert canonical(split_one_way) != canonical(split_other_way)
    assert canonical({**ROW, "request_reference": "-"}) != canonical(ROW)  # "-" is not None
