"""Age bands from a birth date: under-13 users need a guardian and get no marketing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

AgeBand = Literal["under_13", "13_to_17", "adult", "unknown"]

# The date is not the same everywhere: it begins at UTC+14 and ends at UTC-12.
_FIRST_ZONE, _LAST_ZONE = timedelta(hours=14), timedelta(hours=-12)


def earliest_today(now: datetime) -> date:
    """The date where it is earliest (UTC-12) at ``now``: a birthday has begun for
    everyone only then. Ages are counted on it, so that no child is taken for 13 where
    they live before their birthday (west of UTC, the UTC date comes up to 12 hours early)."""
    return (now.astimezone(UTC) + _LAST_ZONE).date()


def latest_today(now: datetime) -> date:
    """The date where it is latest (UTC+14) at ``now``: a day that began somewhere is no
    future day."""
    return (now.astimezone(UTC) + _FIRST_ZONE).date()


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
