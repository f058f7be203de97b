"""Telephone numbers: international (``+`` prefixed) and North American formats.

Bare digit runs are never phones: without a ``+`` or the usual punctuation they are far
more often order numbers, timestamps or quantities than telephone numbers.
"""

from __future__ import annotations

import re

from shared.pii.findings import Finding, PiiKind, merge_overlapping

MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15  # E.164; anything longer is a card or an id, not a phone

# Either compact E.164 or a short country/area code followed by separated groups; the
# compact form is never extended, so it cannot swallow the digit groups written after it.
# Every repetition starts with a separator or a parenthesised area code, so a digit run
# can be split in only one way and a failed match cannot backtrack exponentially.
_INTERNATIONAL = re.compile(
    r"(?<![\w+])\+"
    r"(?:[0-9]{1,4}(?![0-9])(?:(?:[ .-]?\([0-9]{1,4}\)[ .-]?|[ .-])[0-9]+)+|[0-9]+)"
)
# NANP: area code and exchange never start with 0 or 1, which rules out many dates and ids.
_NORTH_AMERICAN = re.compile(
    r"(?<![0-9])(?<![0-9][.-])"
    r"(?:1[ .-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}"
    r"(?![0-9])(?![.-][0-9])"
)
_DIGITS = re.compile(r"[0-9]+")


def find_phone_numbers(text: str) -> list[Finding]:
    """Phone numbers in ``text``, sorted and non-overlapping."""
    found = [_international(text, m.start(), m.end()) for m in _INTERNATIONAL.finditer(text)]
    found += [Finding(PiiKind.PHONE, m.start(), m.end()) for m in _NORTH_AMERICAN.finditer(text)]
    return merge_overlapping(f for f in found if f is not None)


def _international(text: str, start: int, end: int) -> Finding | None:
    # The pattern is greedy: "+1 415 555 2671 4111 1111 ..." must give back the trailing
    # groups rather than lose the phone, while one run of more than 15 digits is no phone.
    groups = [m.span() for m in _DIGITS.finditer(text, start, end)]
    total = sum(e - s for s, e in groups)
    while total > MAX_PHONE_DIGITS and len(groups) > 1:
        last_start, last_end = groups.pop()
        total -= last_end - last_start
    if not MIN_PHONE_DIGITS <= total <= MAX_PHONE_DIGITS:
        return None
    return Finding(PiiKind.PHONE, start, groups[-1][1])
