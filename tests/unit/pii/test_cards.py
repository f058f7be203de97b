import re
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.pii import contains_card_number, find_card_numbers, redact

from .strategies import DIGITS, card_numbers, luhn_check_digit, luhn_valid_numbers

# Letters, punctuation, spaces and digits, plus a few non-ASCII characters.
SURROUNDING = string.ascii_letters + string.punctuation + " " + DIGITS + "éü€—"
NOT_A_DIGIT = st.sampled_from(string.ascii_letters + string.punctuation + " éü€—")


def is_luhn_valid_card_run(run: str) -> bool:
    return 13 <= len(run) <= 19 and luhn_check_digit(run[:-1]) == run[-1]


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("card 4111 1111 1111 1111 please", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111.", "4111-1111-1111-1111"),
        ("amex 378282246310005", "378282246310005"),
        ("amex 3782 822463 10005", "3782 822463 10005"),
        ("visa13 4222222222222", "4222222222222"),
        ("abc4111111111111111xyz", "4111111111111111"),
        ("exp after: 5500 0000 0000 0004 12/27", "5500 0000 0000 0004"),
        ("2026-11-29 6011111111111117", "6011111111111117"),
    ],
)
def test_card_numbers_are_found_whole(text: str, card: str) -> None:
    [finding] = find_card_numbers(text)
    assert text[finding.start : finding.end] == card
    assert redact(text) == text.replace(card, "[REDACTED:card]")


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567812345678",  # 16 digits, Luhn fails: an order id
        "ref 1234567894111111111111111",  # a card inside a longer digit run is no card
        "2026-11-29 2026-11-30",  # mixed separators: two dates
        "tracking 12345678901234567890123",
        "qty 3, total 19.99",
    ],
)
def test_luhn_failures_and_longer_digit_runs_are_not_cards(text: str) -> None:
    assert find_card_numbers(text) == []
    assert not contains_card_number(text)


@pytest.mark.promise("P-09")
@given(
    card=card_numbers(),
    before=st.text(SURROUNDING, max_size=40),
    after=st.text(SURROUNDING, max_size=40),
    left=NOT_A_DIGIT,
    right=NOT_A_DIGIT,
)
def test_a_card_anywhere_in_text_is_detected_and_redacted(
    card: tuple[str, str], before: str, after: str, left: str, right: str
) -> None:
    # A digit touching the card would make it a longer number, which is rightly not a
    # card; the non-digit neighbours keep the property about the card we planted.
    digits, written = card
    text = before + left + written + right + after
    assert contains_card_number(text)
    redacted = redact(text)
    assert digits not in redacted
    assert written not in redacted
    assert not any(is_luhn_valid_card_run(run) for run in re.findall(r"[0-9]+", redacted))


@st.composite
def texts_with_a_bare_card(draw: st.DrawFn) -> str:
    # Random text practically never holds a Luhn-valid run, so without a planted one the
    # property below would hold for a redact() that does nothing.
    written_cards = card_numbers().map(lambda card: card[1])
    fragment = st.one_of(st.text(SURROUNDING, max_size=40), written_cards)
    fragments = draw(st.lists(fragment, max_size=6))
    bare = draw(NOT_A_DIGIT) + draw(luhn_valid_numbers()) + draw(NOT_A_DIGIT)
    fragments.insert(draw(st.integers(0, len(fragments))), bare)
    return "".join(fragments)


@pytest.mark.promise("P-09")
@given(texts_with_a_bare_card())
def test_redacted_text_never_keeps_a_luhn_valid_digit_run(text: str) -> None:
    assert any(is_luhn_valid_card_run(run) for run in re.findall(r"[0-9]+", text))
    redacted = redact(text)
    assert not any(is_luhn_valid_card_run(run) for run in re.findall(r"[0-9]+", redacted))


@given(
    prefix=st.text(DIGITS, min_size=15, max_size=15),
    offset=st.integers(1, 9),
    before=st.text(string.ascii_letters + " ", max_size=30),
    after=st.text(string.ascii_letters + " ", max_size=30),
)
def test_sixteen_digits_failing_luhn_are_left_alone(
    prefix: str, offset: int, before: str, after: str
) -> None:
    # Letters and spaces only, and spaces around the number: no phone (it needs "+" or
    # punctuation), no token (letters glued to the digits could form a long random run).
    number = prefix + str((int(luhn_check_digit(prefix)) + offset) % 10)
    text = f"{before} {number} {after}"
    # "Bearer 1234..." is a credential, legitimately redacted as a token.
    assume(not any(scheme in before.lower() for scheme in ("bearer", "basic")))
    assert not contains_card_number(text)
    assert redact(text) == text


@given(st.text(DIGITS, min_size=20, max_size=40))
def test_digit_runs_longer_than_a_card_are_never_cut_into_one(run: str) -> None:
    assert find_card_numbers(f"order {run}.") == []
