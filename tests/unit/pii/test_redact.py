import string
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pii import Finding, PiiKind, contains_pii, find_pii, redact

from .strategies import FULL_WIDTH, sensitive_values

FILLER = st.text(string.ascii_letters, min_size=1, max_size=12)
SEPARATORS = st.sampled_from([" ", ", ", "\n", " - ", "; ", "\t"])


@st.composite
def texts_with_personal_data(
    draw: st.DrawFn, filler: st.SearchStrategy[str] = FILLER
) -> tuple[str, list[str]]:
    """(text, the sensitive values planted in it among filler words)."""
    values = draw(st.lists(sensitive_values(), min_size=1, max_size=5))
    pieces = draw(st.permutations(values + draw(st.lists(filler, max_size=8))))
    text = pieces[0]
    for piece in pieces[1:]:
        text += draw(SEPARATORS) + piece
    return text, values


def test_findings_carry_no_matched_value() -> None:
    [finding] = find_pii("mail jane@example.com")
    assert finding == Finding(PiiKind.EMAIL, 5, 21)
    assert "jane" not in repr(finding)
    assert not hasattr(finding, "__dict__")  # slots: nothing else can be attached


@pytest.mark.promise("P-09")
@pytest.mark.promise("P-04")
def test_each_kind_gets_its_own_marker() -> None:
    text = "jane@example.com, +14155552671, 4111 1111 1111 1111, 10.0.0.1, ::1, Bearer 0a1b2c3d4e5f"
    assert redact(text) == (
        "[REDACTED:email], [REDACTED:phone], [REDACTED:card], [REDACTED:ipv4], "
        "[REDACTED:ipv6], Bearer [REDACTED:token]"
    )


def test_kinds_restrict_what_is_redacted() -> None:
    text = "jane@example.com or (415) 555-2671"
    assert redact(text, frozenset({PiiKind.PHONE})) == "jane@example.com or [REDACTED:phone]"
    assert contains_pii(text, frozenset({PiiKind.EMAIL}))
    assert not contains_pii(text, frozenset({PiiKind.CARD, PiiKind.IPV4}))


@pytest.mark.promise("P-09")
def test_a_card_after_a_phone_is_never_half_redacted_as_a_phone() -> None:
    # The phone pattern alone would take "+1 415 555 2671 4111" and leave "1111 1111 1111".
    text = "tel +1 415 555 2671 4111 1111 1111 1111 end"
    assert redact(text) == "tel [REDACTED:card] end"
    assert redact(text, frozenset({PiiKind.PHONE})) == "tel [REDACTED:card] end"


@pytest.mark.promise("P-09")
def test_numbers_touching_a_card_are_redacted_with_it() -> None:
    # Every Luhn-valid window of the digit groups is covered, so a neighbouring group that
    # happens to complete another valid window cannot leave the real card half visible.
    assert redact("4111 1111 1111 1111 10.0.0.1") == "[REDACTED:card]"


@pytest.mark.promise("P-09")
def test_a_number_is_never_cut_into_a_redacted_part_and_a_card() -> None:
    # The token pattern stops where full-width digits go on: the 13 it left would pass
    # Luhn, a card of their own, though they were the end of a 30-digit number.
    number = "0" * 17 + ("0" * 13).translate(FULL_WIDTH)
    text = f"id a{'0' * 13}a{number} end"
    assert redact(text) == "id [REDACTED:card] end"
    assert not contains_pii(redact(text))


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("call (020) 7183 8750 today", "call [REDACTED:phone] today"),
        ("call 415/555-2671 today", "call [REDACTED:phone] today"),
        ("mail o'brien@example.com today", "mail [REDACTED:email] today"),
        ("mail 'o'brien@example.com' today", "mail '[REDACTED:email]' today"),
    ],
)
def test_bracketed_trunk_prefixes_slashed_area_codes_and_apostrophes_are_redacted(
    text: str, redacted: str
) -> None:
    assert redact(text) == redacted


def test_text_without_personal_data_is_returned_unchanged() -> None:
    text = "Repair #1234567 booked 2026-11-29 at 10:30 for 19.99 EUR (v1.2.3)."
    assert redact(text) == text
    assert not contains_pii(text)


@given(texts_with_personal_data(filler=st.text(min_size=1, max_size=40)))
def test_findings_are_sorted_non_overlapping_and_inside_the_text(
    sample: tuple[str, list[str]],
) -> None:
    # Planted values among any text at all (random text alone rarely holds one).
    text, _ = sample
    findings = find_pii(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)
    assert all(a.end <= b.start for a, b in pairwise(findings))


@given(texts_with_personal_data())
def test_findings_in_dense_text_are_sorted_and_non_overlapping(
    sample: tuple[str, list[str]],
) -> None:
    text, _ = sample
    findings = find_pii(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)
    assert all(a.end <= b.start for a, b in pairwise(findings))


@pytest.mark.promise("P-09")
@pytest.mark.promise("P-04")
@given(texts_with_personal_data())
def test_redacted_text_keeps_none_of_the_personal_data(sample: tuple[str, list[str]]) -> None:
    text, values = sample
    assert contains_pii(text)
    redacted = redact(text)
    assert not [value for value in values if value in redacted]
    assert not contains_pii(redacted)
