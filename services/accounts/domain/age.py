"""Age bands from a birth date: under-13 users need a guardian and get no marketing."""

from __future__ import annotations

from datetime import date
from typing import Literal

AgeBand = Literal["under_13", "13_to_17", "adult", "unknown"]


def age_on(birth_date: date, today: date) -> int:
    """Completed years on ``today`` (a 29 February birthday counts on 1 March)."""
    years = today.year - birth_date.year
    if (today.month, today.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def age_band(birth_date: date | None, today: date) -> AgeBand:
    if birth_date is None:
        return "unknown"
    years = age_on(birth_date, today)
    if years < 13:
        return "under_13"
    if years < 18:
        return "13_to_17"
    return "adult"


def plausible_birth_date(birth_date: date, today: date) -> bool:
    """Not in the future and not older than any living person."""
    return birth_date <= today and age_on(birth_date, today) <= 130
