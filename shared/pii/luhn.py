"""The Luhn checksum that every payment card number carries."""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits only, no separators) pass the Luhn check."""
    # str.isdigit() also accepts superscripts and other scripts' digits; cards are ASCII.
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0
