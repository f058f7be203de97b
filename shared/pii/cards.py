"""Payment card numbers: 13-19 digits, optionally grouped, that pass the Luhn check."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from shared.pii.findings import Finding, PiiKind, merge_overlapping
from shared.pii.luhn import luhn_valid

MIN_CARD_DIGITS = 13
MAX_CARD_DIGITS = 19

# A maximal sequence of digit groups joined by single spaces or dashes. Cards are looked
# for on whole groups only, so a long contiguous run (a 25-digit order number) is never
# cut into a card, while letters around a run do not hide one (``abc4111111111111111xyz``).
_GROUPED_DIGITS = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")

Span = tuple[int, int]


def find_card_numbers(text: str) -> list[Finding]:
    """Luhn-valid card numbers in ``text``, sorted and non-overlapping."""
    findings: list[Finding] = []
    for sequence in _GROUPED_DIGITS.finditer(text):
        groups = [g.span() for g in _GROUP.finditer(text, sequence.start(), sequence.end())]
        windows = _card_windows(text, groups)
        findings += merge_overlapping(Finding(PiiKind.CARD, s, e) for s, e in windows)
    return findings


def contains_card_number(text: str) -> bool:
    """Whether ``text`` holds at least one Luhn-valid card number."""
    return bool(find_card_numbers(text))


def _card_windows(text: str, groups: Sequence[Span]) -> Iterator[Span]:
    # Every valid window is reported, not just one per sequence: when digits next to a
    # card happen to form another valid window, the union still covers the real card.
    for first in range(len(groups)):
        yield from _windows_from(text, groups, first)


def _windows_from(text: str, groups: Sequence[Span], first: int) -> Iterator[Span]:
    digits = ""
    for last in range(first, len(groups)):
        # One separator style per number: "2026-11-29 2026-11-30" is two dates, not a card.
        if last > first + 1 and text[groups[last][0] - 1] != text[groups[first + 1][0] - 1]:
            return
        digits += text[groups[last][0] : groups[last][1]]
        if len(digits) > MAX_CARD_DIGITS:
            return
        if len(digits) >= MIN_CARD_DIGITS and luhn_valid(digits):
            yield groups[first][0], groups[last][1]
