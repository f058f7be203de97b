"""The audit chain's canonical bytes: every field counts, and no text forges a boundary."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.accounts.audit_chain import ChainReport, canonical, head_break, link

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


CHECKED = ChainReport(rows=8, head_seq=8, head=link(b"", ROW).hex())


def test_a_check_continues_from_a_head_that_still_has_its_link() -> None:
    assert head_break(CHECKED, link(b"", ROW)) is None
    # An empty log checked earlier has no head to hold.
    assert head_break(ChainReport(rows=0, head_seq=0, head=""), None) is None


def test_a_head_cut_from_the_end_breaks_the_chain_there() -> None:
    broken = head_break(CHECKED, None)
    assert broken is not None
    assert (broken.intact, broken.broken_at, broken.head_seq, broken.rows) == (False, 8, 7, 7)
    assert broken.reason == "row 8, checked before, is missing"


def test_a_head_written_again_breaks_the_chain_there() -> None:
    # The row cut, the next one written takes its place, linked from the row before.
    broken = head_break(CHECKED, link(b"\x01", {**ROW, "purpose": "new"}))
    assert broken is not None
    assert (broken.broken_at, broken.reason) == (
        8,
        "row 8 no longer has the link it had when checked",
    )
