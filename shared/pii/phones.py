"""Telephone numbers: international (``+`` or ``00`` prefixed), North American, and
national numbers dialled with a trunk ``0`` (European style: ``07700 900123``,
``06 12 34 56 78``, ``030/12345678``).

Bare digit runs are never phones: without a prefix or the usual punctuation they are far
more often order numbers, timestamps or quantities than telephone numbers. Digits of any
script (full-width, Arabic-Indic...) count as digits, and the spaces, dashes and invisible
characters typography and editors put between groups (narrow no-break space, non-breaking
hyphen, en dash...; shared.pii.separators) count as a space or "-": they are read as ASCII
first. Tabs and line breaks do not join groups: they separate columns and lines far more
often than a number's groups, and unlike a card a phone has no check digit to tell.
"""

from __future__ import annotations

import re
import unicodedata

from shared.pii.findings import Finding, PiiKind, merge_overlapping
from shared.pii.separators import INVISIBLE_SEPARATORS, UNICODE_DASHES, UNICODE_SPACES

MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15  # E.164; anything longer is a card or an id, not a phone
# A national number with its trunk 0: 10 or 11 digits in most of Europe (fewer would
# also be dates written "01.02.2024"; more, ids).
MIN_NATIONAL_DIGITS = 10
MAX_NATIONAL_DIGITS = 11

_SEP = r"[ ./-]"
# Either compact E.164 or a short country/area code followed by separated groups; the
# compact form is never extended, so it cannot swallow the digit groups written after it.
# Every repetition starts with a separator or a parenthesised area code, so a digit run
# can be split in only one way and a failed match cannot backtrack exponentially.
_GROUPED = rf"[0-9]{{1,4}}(?![0-9])(?:(?:{_SEP}?\([0-9]{{1,4}}\){_SEP}?|{_SEP})[0-9]+)+"
# "00" (the international prefix dialled in Europe) only with separated groups: a bare
# run starting with 00 is an id ("order 0012345678"). A "+" may follow a letter: in
# "tel+442071838750" or a path's "phone+14155552671" the number is as plain as after a
# space, and no id, date or version is written letters, "+", then seven digits or more.
_INTERNATIONAL = re.compile(rf"(?<![0-9+])\+(?:{_GROUPED}|[0-9]+)|(?<![\w+])00(?=[1-9]){_GROUPED}")
# NANP: area code and exchange never start with 0 or 1, which rules out many dates and ids.
# A slash may follow the area code ("415/555-2671"), not the exchange: "415/555/2671"
# is as often a path of three numbers.
_NORTH_AMERICAN = re.compile(
    r"(?<![0-9])(?<![0-9][.-])"
    r"(?:1[ .-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ ./-])[2-9][0-9]{2}[ .-][0-9]{4}"
    r"(?![0-9])(?![.-][0-9])"
)
# Trunk 0, an area or mobile prefix, then groups of two or more digits; the prefix may be
# in brackets, as British numbers are written ("(020) 7183 8750").
_NATIONAL = re.compile(
    rf"(?<![\w+])(?:0[1-9][0-9]{{0,4}}(?:{_SEP}[0-9]{{2,8}}){{1,4}}"
    rf"|\(0[1-9][0-9]{{0,4}}\) ?[0-9]{{2,8}}(?:{_SEP}[0-9]{{2,8}}){{0,3}})(?![\w])"
)
# "01.02.2024", "01/02/2024 10": a day, a month and a year are no phone.
_DATE = re.compile(r"[0-3]?[0-9][./-][01]?[0-9][./-](?:19|20)[0-9]{2}\b")
_DIGITS = re.compile(r"[0-9]+")
# Same length in and out, so the spans found in the translation are the text's. An
# invisible separator becomes a space rather than nothing, which would change lengths:
# "06<ZWSP>12345678" is then read as "06 12345678", a number a reader sees as one.
_SIGNS = {"\uff0b": "+", "\uff08": "(", "\uff09": ")", "\uff0e": ".", "\uff0f": "/"}
_SIGNS |= dict.fromkeys("\u3002\uff61", ".")  # ideographic full stops (an input method's ".")
_SIGNS |= dict.fromkeys(UNICODE_SPACES + INVISIBLE_SEPARATORS, " ")
_SIGNS |= dict.fromkeys(UNICODE_DASHES, "-")


def find_phone_numbers(text: str) -> list[Finding]:
    """Phone numbers in ``text``, sorted and non-overlapping."""
    text = _ascii(text)
    found = [
        _counted(text, m.start(), m.end(), MIN_PHONE_DIGITS, MAX_PHONE_DIGITS)
        for m in _INTERNATIONAL.finditer(text)
    ]
    found += [Finding(PiiKind.PHONE, m.start(), m.end()) for m in _NORTH_AMERICAN.finditer(text)]
    found += [
        _counted(text, m.start(), m.end(), MIN_NATIONAL_DIGITS, MAX_NATIONAL_DIGITS)
        for m in _NATIONAL.finditer(text)
        if not _DATE.match(text, m.start())
    ]
    return merge_overlapping(f for f in found if f is not None)


def _ascii(text: str) -> str:
    """``text`` with every decimal digit, the full-width signs and the Unicode separators
    as ASCII, length kept."""
    if text.isascii():
        return text
    out = []
    for char in text:
        digit = unicodedata.decimal(char, None)
        out.append(str(digit) if digit is not None else _SIGNS.get(char, char))
    return "".join(out)


def _counted(text: str, start: int, end: int, least: int, most: int) -> Finding | None:
    # The patterns are greedy: "+1 415 555 2671 4111 1111 ..." must give back the trailing
    # groups rather than lose the phone, while one run of too many digits is no phone.
    groups = [m.span() for m in _DIGITS.finditer(text, start, end)]
    total = sum(e - s for s, e in groups)
    while total > most and len(groups) > 1:
        last_start, last_end = groups.pop()
        total -= last_end - last_start
    if not least <= total <= most:
        return None
    return Finding(PiiKind.PHONE, start, groups[-1][1])
