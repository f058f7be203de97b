"""Payment card numbers: 13-19 digits, optionally grouped, that pass the Luhn check.

Digits may be written in any script's decimal digits (full-width ones included) and
groups may be separated by runs of one to three separator characters: spaces of any kind
(no-break, thin, tabs, line breaks), dots, dashes, slashes, plus signs and underscores
(what form and URL encoders make of spaces), mixed or not; and colons or commas, one
kind of gap throughout, between groups of a card's sizes only (see ``_LISTING``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence

from shared.pii.findings import Finding, PiiKind, merge_overlapping
from shared.pii.luhn import luhn_valid
from shared.pii.separators import INVISIBLE_SEPARATORS, UNICODE_DASHES, UNICODE_SPACES

MIN_CARD_DIGITS = 13
MAX_CARD_DIGITS = 19
# Where separators mix, every group but the last needs this many digits. Shorter groups
# are how dates, versions and phone numbers are written; a card's groups have 4 to 6
# digits, except the last one when the number is grouped by fours ("4222 2222 2222 2").
MIN_MIXED_GROUP_DIGITS = 4
MAX_LISTED_GROUP_DIGITS = 6

# Whitespace covers the no-break (U+00A0) and thin (U+2009, U+202F) spaces that web pages
# and word processors put between groups. The full-width forms are what NFKC folds into
# ". /", with the ideographic full stops and commas an input method writes for ". ,"
# in full-width mode (U+3002, U+3001 and their half-width forms, which NFKC does not
# fold); shared.pii.separators lists the Unicode spaces, the dashes editors make of
# "-" and the invisible characters (soft hyphen, zero-width joiners...): a reader still
# sees one number.
_SEPARATOR = (
    r"[\s.\-/+_:,\uff0c\uff0e\uff0f\uff1a\u3001\u3002\uff61\uff64"
    + re.escape(UNICODE_SPACES + INVISIBLE_SEPARATORS + UNICODE_DASHES)
    + "]"
)
# Colons and commas (full-width ones too) write times ("12:30:45") and lists ("3,5,8",
# "a phone, a card, an address") far more often than a card's groups
# ("4111:1111:1111:1111"): a gap holding one joins groups only when every gap is that
# same one and every group but the last has a card group's 4 to 6 digits.
_LISTING = re.compile(r"[:,\uff0c\uff1a\u3001\uff64]")
# A maximal sequence of digit groups joined by one to three separator characters. ``\d``
# is any script's decimal digit. Cards are looked for on whole groups only, so a long
# contiguous run (a 25-digit order number) is never cut into a card, while letters around
# a run do not hide one (``abc4111111111111111xyz``). Digits and separators are disjoint
# classes, so the scan stays linear.
_GROUPED_DIGITS = re.compile(rf"\d+(?:{_SEPARATOR}{{1,3}}\d+)*")
_GROUP = re.compile(r"\d+")
_DIGIT = re.compile(r"\d")
_ASCII_DIGITS = "0123456789"

Span = tuple[int, int]


def find_card_numbers(text: str) -> list[Finding]:
    """Luhn-valid card numbers in ``text``, sorted and non-overlapping."""
    if not _may_hold_a_card(text):
        return []
    findings: list[Finding] = []
    for sequence in _GROUPED_DIGITS.finditer(text):
        # Most sequences are dates, prices or short ids: too short to hold 13 digits.
        if sequence.end() - sequence.start() < MIN_CARD_DIGITS:
            continue
        groups = [g.span() for g in _GROUP.finditer(text, sequence.start(), sequence.end())]
        windows = _card_windows(text, groups)
        findings += merge_overlapping(Finding(PiiKind.CARD, s, e) for s, e in windows)
    return findings


def contains_card_number(text: str) -> bool:
    """Whether ``text`` holds at least one Luhn-valid card number."""
    return bool(find_card_numbers(text))


def _may_hold_a_card(text: str) -> bool:
    # Called on every log line, URL segment and beacon field: most hold fewer than 13
    # digits, and ten str.count() calls take a fifth of the time of the pattern's scan.
    if sum(map(text.count, _ASCII_DIGITS)) >= MIN_CARD_DIGITS:
        return True
    # isascii() is O(1): other scripts' digits are counted only where they may be.
    return not text.isascii() and len(_DIGIT.findall(text)) >= MIN_CARD_DIGITS


def _card_windows(text: str, groups: Sequence[Span]) -> Iterator[Span]:
    # Every valid window is reported, not just one per sequence: when digits next to a
    # card happen to form another valid window, the union still covers the real card.
    for first in range(len(groups)):
        yield from _windows_from(text, groups, first)


def _windows_from(text: str, groups: Sequence[Span], first: int) -> Iterator[Span]:
    digits = ""
    first_separator = None
    uniform = card_shaped = card_sized = True
    listing = False
    for last in range(first, len(groups)):
        if last > first:
            previous_start, previous_end = groups[last - 1]
            separator = text[previous_end : groups[last][0]]
            first_separator = first_separator or separator
            uniform = uniform and separator == first_separator
            listing = listing or _LISTING.search(separator) is not None
            size = previous_end - previous_start
            card_shaped = card_shaped and size >= MIN_MIXED_GROUP_DIGITS
            card_sized = card_sized and size <= MAX_LISTED_GROUP_DIGITS
            # Separators may mix ("4111 1111-1111\n1111") only between card-sized groups:
            # "2026-11-29 2026-11-30" is two dates and "555-123-4567 8901" a phone and a
            # number, not a card. With one separator throughout, any grouping still counts
            # ("4 1 1 1 ..."), as it did when only single spaces or dashes were known;
            # but not with colons or commas: "4,1,1,1,..." is a list.
            if listing:
                if not (uniform and card_shaped and card_sized):
                    return
            elif not (uniform or card_shaped):
                return
        digits += _ascii(text[groups[last][0] : groups[last][1]])
        if len(digits) > MAX_CARD_DIGITS:
            return
        if len(digits) >= MIN_CARD_DIGITS and luhn_valid(digits):
            yield groups[first][0], groups[last][1]


def _ascii(group: str) -> str:
    # One digit for one character: the span found is the span of the original text, which
    # whole-text NFKC (it may change lengths) would not keep.
    if group.isascii():
        return group
    return "".join(str(unicodedata.decimal(char)) for char in group)
