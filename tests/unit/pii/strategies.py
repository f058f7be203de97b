"""Hypothesis strategies for personal data, built independently of shared.pii."""

from __future__ import annotations

import string
import unicodedata
from urllib.parse import unquote

from hypothesis import strategies as st

DIGITS = string.digits

# How people separate a card's groups: keyboards, word processors and web pages (no-break
# and thin spaces), line breaks of text that wrapped, one to three characters per gap.
CARD_SEPARATORS: tuple[str, ...] = (
    " ", "-", ".", "/", "\u00a0", "\u2009", "\u202f", "  ", "\t", "\n", "\r\n", " - ", " / ",
    # Invisible characters and the dashes editors and input methods make of "-".
    "\u00ad", "\u200c", "\u200d", "\u2062", "\u180e", "\u2014", "\u2015", "\u30fc",
)  # fmt: skip
# The separators a beacon's page, screen or referrer may hold: one with a control
# character is refused whole (tests/unit/analytics/test_beacon.py), nothing kept to scrub.
BEACON_CARD_SEPARATORS = tuple(s for s in CARD_SEPARATORS if all(ord(c) >= 0x20 for c in s))
FULL_WIDTH = str.maketrans(DIGITS, "".join(chr(ord("\uff10") + int(d)) for d in DIGITS))


def luhn_check_digit(prefix: str) -> str:
    """The digit that makes ``prefix + digit`` Luhn-valid (computed here, not by the code)."""
    total = 0
    for position, char in enumerate(reversed(prefix)):
        doubled = int(char) * (1 if position % 2 else 2)  # the check digit takes position 0
        total += doubled // 10 + doubled % 10
    return str((10 - total % 10) % 10)


def digit_groups(digits: str, sizes: tuple[int, ...], gaps: list[str]) -> str:
    """``digits`` cut into groups of ``sizes``, the gaps between them written as ``gaps``."""
    groups, start = [], 0
    for size in sizes:
        groups.append(digits[start : start + size])
        start += size
    return groups[0] + "".join(gap + group for gap, group in zip(gaps, groups[1:], strict=True))


@st.composite
def luhn_valid_numbers(draw: st.DrawFn, lengths: tuple[int, int] = (13, 19)) -> str:
    """Contiguous Luhn-valid numbers of 13 to 19 digits."""
    length = draw(st.integers(*lengths))
    prefix = draw(st.text(DIGITS, min_size=length - 1, max_size=length - 1))
    return prefix + luhn_check_digit(prefix)


def card_groups(length: int) -> tuple[tuple[int, ...], ...]:
    """The ways a number of ``length`` digits is grouped on cards and by people."""
    by_fours = (4,) * (length // 4) + ((length % 4,) if length % 4 else ())
    shapes = {15: (4, 6, 5), 14: (4, 6, 4)}  # Amex, Diners
    return (by_fours, shapes[length]) if length in shapes else (by_fours,)


@st.composite
def card_numbers(draw: st.DrawFn, separators: tuple[str, ...] = CARD_SEPARATORS) -> tuple[str, str]:
    """(digits, as written): contiguous, or grouped (by four, Amex 4-6-5, ...) with one
    separator or a mix of them, in ASCII or full-width digits."""
    digits = draw(luhn_valid_numbers())
    style = draw(st.sampled_from(["contiguous", "one separator", "mixed"]))
    if style == "contiguous":
        written = digits
    else:
        sizes = draw(st.sampled_from(card_groups(len(digits))))
        one = draw(st.sampled_from(separators))
        gaps = [
            one if style == "one separator" else draw(st.sampled_from(separators))
            for _ in sizes[1:]
        ]
        written = digit_groups(digits, sizes, gaps)
    return digits, written.translate(FULL_WIDTH) if draw(st.booleans()) else written


def digits_of(text: str) -> str:
    """The digits of ``text`` (or of a URL) in ASCII, everything else dropped: a card that
    is in it, however written or encoded, is in this."""
    plain = unicodedata.normalize("NFKC", unquote(text))
    return "".join(char for char in plain if char in DIGITS)


@st.composite
def emails(draw: st.DrawFn) -> str:
    """Practical addresses: dotted local part, optional +tag, hyphenated domain labels."""
    word = st.text(string.ascii_lowercase + DIGITS, min_size=1, max_size=10)
    local = ".".join(draw(st.lists(word, min_size=1, max_size=3)))
    tag = draw(st.sampled_from(["", "+news", "_x", "-1"]))
    label = word.map(lambda w: w if len(w) < 3 else f"{w[0]}-{w[1:]}")
    domain = ".".join(draw(st.lists(label, min_size=1, max_size=3)))
    tld = draw(st.text(string.ascii_lowercase, min_size=2, max_size=6))
    return f"{local}{tag}@{domain}.{tld}"


# How the spaces and dashes between a phone number's groups are written: typography
# (French numbers take the narrow no-break space), word processors' autocorrect
# (non-breaking hyphen, en dash), East Asian input (ideographic space, full-width and
# "long vowel" dashes) and invisible characters pasted from web pages.
PHONE_SPACES: tuple[str, ...] = (
    " ", "\u00a0", "\u2009", "\u202f", "\u2007", "\u3000", "\u200b", "\u00ad",
)  # fmt: skip
PHONE_DASHES: tuple[str, ...] = (
    "-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\uff0d", "\u30fc",
)  # fmt: skip


@st.composite
def phones(
    draw: st.DrawFn,
    spaces: tuple[str, ...] = PHONE_SPACES,
    dashes: tuple[str, ...] = PHONE_DASHES,
) -> str:
    """E.164 numbers, spaced international numbers, North American formats and British
    ones with the trunk prefix in brackets; their spaces written as one of ``spaces``
    and their dashes as one of ``dashes``."""
    area, exchange = (draw(st.integers(200, 999)) for _ in range(2))
    line = draw(st.integers(0, 9999))
    country = draw(st.integers(1, 999))
    subscriber = draw(st.text(DIGITS, min_size=6, max_size=15 - len(str(country))))
    written = draw(
        st.sampled_from(
            [
                f"+{country}{subscriber}",
                f"+{country} {subscriber[:3]} {subscriber[3:]}",
                f"({area}) {exchange}-{line:04d}",
                f"{area}-{exchange}-{line:04d}",
                f"{area}.{exchange}.{line:04d}",
                f"{area}/{exchange}-{line:04d}",
                f"(0{str(area)[:2]}) {exchange}{line % 10} {line:04d}",
                f"+1 {area} {exchange} {line:04d}",
            ]
        )
    )
    # The templates hold " " and "-" only between groups: each may be written otherwise.
    return written.replace(" ", draw(st.sampled_from(spaces))).replace(
        "-", draw(st.sampled_from(dashes))
    )


def ip_addresses() -> st.SearchStrategy[str]:
    """IPv4 and IPv6 addresses in their canonical text form, "::" excepted (no host)."""
    return st.ip_addresses().map(str).filter(lambda ip: ip != "::")


def jwts() -> st.SearchStrategy[str]:
    part = st.text(string.ascii_letters + DIGITS + "-_", min_size=4, max_size=40)
    return st.tuples(part, part, part).map(lambda p: f"eyJ{p[0]}.{p[1]}.{p[2]}")


def sensitive_values(
    card_separators: tuple[str, ...] = CARD_SEPARATORS,
) -> st.SearchStrategy[str]:
    """One personal or secret value of any detected kind, as a person would write it."""
    cards = card_numbers(card_separators).map(lambda card: card[1])
    return st.one_of(emails(), phones(), cards, ip_addresses(), jwts())
