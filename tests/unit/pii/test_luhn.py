import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pii import luhn_valid

from .strategies import DIGITS, luhn_check_digit, luhn_valid_numbers


@pytest.mark.parametrize(
    "number", ["4111111111111111", "378282246310005", "5500000000000004", "6011111111111117"]
)
def test_well_known_test_cards_pass(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "text", ["1234567812345678", "4111111111111112", "", "4111 1111 1111 1111", "٤١١١", "12a4"]
)
def test_wrong_checksums_separators_and_non_ascii_digits_fail(text: str) -> None:
    assert not luhn_valid(text)


@given(luhn_valid_numbers())
def test_a_number_with_its_computed_check_digit_passes(number: str) -> None:
    assert luhn_valid(number)


@given(prefix=st.text(DIGITS, min_size=12, max_size=18), offset=st.integers(1, 9))
def test_any_other_check_digit_fails(prefix: str, offset: int) -> None:
    wrong = str((int(luhn_check_digit(prefix)) + offset) % 10)
    assert not luhn_valid(prefix + wrong)
