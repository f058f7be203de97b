"""Clock helpers for tests whose counts are per UTC day, or per UTC hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def seconds_to_clear_midnight(now: datetime, margin: timedelta) -> float:
    """How long a test starting at ``now`` and lasting up to ``margin`` must wait so that
    it does not cross UTC midnight (0 when it would not)."""
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    left = midnight - now
    return left.total_seconds() + 1.0 if left < margin else 0.0


def seconds_to_clear_the_hour(now: datetime, margin: timedelta) -> float:
    """How long a test starting at ``now``, whose counts per hour are made within
    ``margin``, must wait so that they do not cross a UTC hour (0 when they would not)."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    left = hour - now
    return left.total_seconds() + 1.0 if left < margin else 0.0


def a_childs_birth_date(age: int = 9) -> str:
    """An ISO birth date ``age`` or ``age`` + 1 years ago (1 January): under 13 whatever
    the day a test runs, for ``age`` up to 11. A fixed date would grow up one day."""
    return f"{datetime.now(UTC).year - age - 1}-01-01"
