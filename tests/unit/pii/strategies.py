"""Hypothesis strategies for personal data, built independently of shared.pii."""

from __future__ import annotations

import string

from hypothesis import strategies as st

DIGITS = string.digits


def luhn_check_digit(prefix: str) -> str:
    """The digit that makes ``prefix + digit`` Luhn-valid (computed here, not by the code)."""
    total = 0
    for position, char in enumerate(reversed(prefix)):
        doubled = int(char) * (1 if position % 2 else 2)  # the check digit takes position 0
        total += doubled // 10 + doubled % 10
    return str((10 - total % 10) % 10)


def digit_groups(digits: str, sizes: tuple[int, ...], separator: str) -> str:
    groups, start = [], 0
    for size in sizes:
        groups.append(digits[start : start + size])
        start += size
    return separator.join(groups)


@st.composite
def luhn_valid_numbers(draw: st.DrawFn, lengths: tuple[int, int] = (13, 19)) -> str:
    """Contiguous Luhn-valid numbers of 13 to 19 digits."""
    length = draw(st.integers(*lengths))
    prefix = draw(st.text(DIGITS, min_size=length - 1, max_size=length - 1))
    return prefix + luhn_check_digit(prefix)


@st.composite
def card_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, as written): 16 digits may be grouped by 4, 15 digits as Amex 4-6-5."""
    digits = draw(luhn_valid_numbers())
    separator = draw(st.sampled_from(["", " ", "-"]))
    if len(digits) == 16:
        return digits, digit_groups(digits, (4, 4, 4, 4), separator)
    if len(digits) == 15:
        return digits, digit_groups(digits, (4, 6, 5), separator)
    return digits, digits


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


@st.composite
def phones(draw: st.DrawFn) -> str:
    """E.164 numbers, spaced international numbers and North American formats."""
    area, exchange = (draw(st.integers(200, 999)) for _ in range(2))
    line = draw(st.integers(0, 9999))
    country = draw(st.integers(1, 999))
    subscriber = draw(st.text(DIGITS, min_size=6, max_size=15 - len(str(country))))
    return draw(
        st.sampled_from(
            [
                f"+{country}{subscriber}",
                f"+{country} {subscriber[:3]} {subscriber[3:]}",
                f"({area}) {exchange}-{line:04d}",
                f"{area}-{exchange}-{line:04d}",
                f"{area}.{exchange}.{line:04d}",
                f"+1 {area} {exchange} {line:04d}",
            ]
        )
    )


def ip_addresses() -> st.SearchStrategy[str]:
    """IPv4 and IPv6 addresses in their canonical text form, "::" excepted (no host)."""
    return st.ip_addresses().map(str).filter(lambda ip: ip != "::")


def jwts() -> st.SearchStrategy[str]:
    part = st.text(string.ascii_letters + DIGITS + "-_", min_size=4, max_size=40)
    return st.tuples(part, part, part).map(lambda p: f"eyJ{p[0]}.{p[1]}.{p[2]}")


def sensitive_values() -> st.SearchStrategy[str]:
    """One personal or secret value of any detected kind, as a person would write it."""
    cards = card_numbers().map(lambda card: card[1])
    return st.one_of(emails(), phones(), cards, ip_addresses(), jwts())
