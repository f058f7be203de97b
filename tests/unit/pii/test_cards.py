import re
import string
import unicodedata
from datetime import date, time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.pii import contains_card_number, find_card_numbers, luhn_valid, redact

from .strategies import (
    DIGITS,
    FULL_WIDTH,
    card_groups,
    card_numbers,
    digit_groups,
    luhn_check_digit,
    luhn_valid_numbers,
)

# Letters, punctuation, spaces and digits, plus a few non-ASCII characters and spaces.
SURROUNDING = string.ascii_letters + string.punctuation + " " + DIGITS + "éü€—\u00a0\t\n"
NOT_A_DIGIT = st.sampled_from(string.ascii_letters + string.punctuation + " éü€—\u00a0\t\n")
ARABIC_INDIC = str.maketrans(DIGITS, "".join(chr(0x0660 + int(d)) for d in DIGITS))
# Characters the detector takes for a separator, as people and editors type them.
SEPARATOR_CHARS = " \t\n\r.-/\u00a0\u2009\u202f\uff0d\uff0e\uff0f\u2013\u200b\u3002\uff61"


def is_luhn_valid_card_run(run: str) -> bool:
    return 13 <= len(run) <= 19 and luhn_check_digit(run[:-1]) == run[-1]


def has_a_luhn_valid_card_run(text: str) -> bool:
    # NFKC first: a full-width digit next to ASCII ones lengthens the same run.
    runs = re.findall(r"[0-9]+", unicodedata.normalize("NFKC", text))
    return any(is_luhn_valid_card_run(run) for run in runs)


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


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    "card",
    [
        "4111.1111.1111.1111",  # invoice and reference fields take dots and slashes
        "4111/1111/1111/1111",
        "4111\u00a01111\u00a01111\u00a01111",  # no-break spaces, copied from a web page
        "4111\u20091111\u20091111\u20091111",  # thin spaces
        "4111\u202f1111\u202f1111\u202f1111",  # narrow no-break spaces
        "4111  1111  1111  1111",
        "4111\t1111\t1111\t1111",
        "4111 1111\n1111 1111",  # a line that wrapped
        "4111\r\n1111\r\n1111\r\n1111",
        "4111 - 1111 - 1111 - 1111",
        "4111 1111-1111.1111",
        "3782-822463 10005",
        "4222 2222 2222 2",  # 13 digits grouped by fours
        "4111\u20131111\u20131111\u20131111",  # en dashes from autocorrection
        "4111\u200b1111\u200b1111\u200b1111",  # zero-width spaces: one number to a reader
        "4111 1111 1111 1111".translate(FULL_WIDTH),
        "4111\uff0d1111\uff0d1111\uff0d1111".translate(FULL_WIDTH),  # full-width dashes
        "4111 1111 ".translate(FULL_WIDTH) + "1111 1111",
        "4111 1111 1111 1111".translate(ARABIC_INDIC),
    ],
)
def test_card_numbers_with_any_separators_or_digits_are_found_whole(card: str) -> None:
    text = f"ref: {card}, thanks"
    [finding] = find_card_numbers(text)
    assert text[finding.start : finding.end] == card
    assert redact(text) == "ref: [REDACTED:card], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "from 2026-11-29 2026-11-03",
        "from 2026/11/29 2026/11/03",
        "from 29.11.2026 03.11.2026",
        "2026-11-03\n2026-11-29",
        "call 555-123-4567 1000 times",
        "call 555.123.4567\u00a01000 times",
    ],
)
def test_luhn_valid_dates_and_phones_are_not_joined_into_a_card(text: str) -> None:
    # The digits together pass Luhn: only their grouping says that these are not cards.
    assert luhn_valid("".join(char for char in text if char.isdigit()))
    assert find_card_numbers(text) == []
    assert redact(text) == text


@st.composite
def cards_with_any_separators(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, as written): grouped as on cards, each gap a run of 1 to 3 separator
    characters of any kind, any digit ASCII or full-width."""
    digits = draw(luhn_valid_numbers())
    sizes = draw(st.sampled_from(card_groups(len(digits))))
    gap = st.text(SEPARATOR_CHARS, min_size=1, max_size=3)
    written = digit_groups(digits, sizes, [draw(gap) for _ in sizes[1:]])
    wide = draw(st.sets(st.integers(0, len(written) - 1)))
    return digits, "".join(
        char.translate(FULL_WIDTH) if i in wide else char for i, char in enumerate(written)
    )


@pytest.mark.promise("P-09")
@given(
    card=cards_with_any_separators(),
    before=st.text(string.ascii_letters, min_size=1, max_size=10),
    after=st.text(string.ascii_letters, min_size=1, max_size=10),
)
def test_a_card_with_any_separators_is_found_whole(
    card: tuple[str, str], before: str, after: str
) -> None:
    _, written = card
    text = f"{before} {written} {after}"
    [finding] = find_card_numbers(text)
    assert text[finding.start : finding.end] == written
    assert redact(text) == f"{before} [REDACTED:card] {after}"


DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%d.%m.%Y", "%d/%m/%Y", "%m-%d-%Y")
SPACES = st.text(" \t\n\u00a0\u2009", min_size=1, max_size=3)


@given(
    dates=st.lists(st.dates(date(1900, 1, 1), date(2099, 12, 31)), min_size=2, max_size=3),
    style=st.sampled_from(DATE_FORMATS),
    gap=SPACES,
)
def test_dates_next_to_each_other_are_never_a_card(dates: list[date], style: str, gap: str) -> None:
    text = "from " + gap.join(day.strftime(style) for day in dates) + " on"
    assert find_card_numbers(text) == []


@given(
    area=st.integers(200, 999),
    exchange=st.integers(100, 999),
    line=st.integers(0, 9999),
    separator=st.sampled_from("-./"),
    gap=SPACES,
    number=st.integers(0, 99999),
)
def test_a_phone_number_followed_by_another_number_is_never_a_card(
    area: int, exchange: int, line: int, separator: str, gap: str, number: int
) -> None:
    phone = separator.join((str(area), str(exchange), f"{line:04d}"))
    assert find_card_numbers(f"call {phone}{gap}{number} times") == []


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
    assert not has_a_luhn_valid_card_run(redacted)


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
    assert has_a_luhn_valid_card_run(text)
    redacted = redact(text)
    assert not has_a_luhn_valid_card_run(redacted)


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


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    "card",
    [
        "4111:1111:1111:1111",
        "4111,1111,1111,1111",
        "4111, 1111, 1111, 1111",
        "3782:822463:10005",
        "4222,2222,2222,2",
        "4111 : 1111 : 1111 : 1111",
        "4111\uff0c1111\uff0c1111\uff0c1111",  # full-width commas
        "4111\uff1a1111\uff1a1111\uff1a1111",  # full-width colons
    ],
)
def test_card_numbers_grouped_with_colons_or_commas_are_found_whole(card: str) -> None:
    text = f"ref: {card} thanks"
    [finding] = find_card_numbers(text)
    assert text[finding.start : finding.end] == card


@pytest.mark.parametrize(
    "text",
    [
        "pick 4,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1 from the list",
        "sizes 41, 11, 11, 11, 11, 11, 11, 11",
        "open 00:00, 20:00, 12:15, 13:00",
        "at 00:30:47, 03:10:32, 09:15:42",
        "splits 04:06:38:34:02:12:26:18",
        "total 4,222,222,222,222 units",  # thousands: groups of three
        "items 233,360,165,255,243,59,13",
    ],
)
def test_lists_of_small_numbers_and_times_are_not_cards(text: str) -> None:
    # The digits together pass Luhn: only their grouping says that these are not cards.
    assert luhn_valid("".join(char for char in text if char.isdigit()))
    assert find_card_numbers(text) == []


@given(
    numbers=st.lists(st.integers(0, 999), min_size=2, max_size=40),
    separator=st.sampled_from([",", ", ", ":", " : ", ",\u00a0", "\uff0c"]),
)
def test_a_list_of_numbers_under_a_thousand_is_never_a_card(
    numbers: list[int], separator: str
) -> None:
    assert find_card_numbers("values " + separator.join(map(str, numbers)) + " end") == []


@given(
    times=st.lists(st.times(), min_size=2, max_size=12),
    style=st.sampled_from(["%H:%M", "%H:%M:%S", "%I:%M"]),
    gap=st.sampled_from([", ", " ", ","]),
)
def test_times_next_to_each_other_are_never_a_card(times: list[time], style: str, gap: str) -> None:
    text = "at " + gap.join(t.strftime(style) for t in times) + " daily"
    assert find_card_numbers(text) == []


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(
    "separator",
    ["\u00ad", "\u200c", "\u200d", "\u2061", "\u2064", "\u180e", "\u2014", "\u2015", "\u30fc"],
)
def test_a_card_split_by_invisible_characters_or_long_dashes_is_found(separator: str) -> None:
    """A soft hyphen (which pages insert so long numbers may wrap), a zero-width joiner,
    an invisible operator, an em dash or the Japanese long-vowel mark: the reader still
    sees one number."""
    written = separator.join(["4111", "1111", "1111", "1111"])
    text = f"card {written} please"
    assert [text[f.start : f.end] for f in find_card_numbers(text)] == [written]
