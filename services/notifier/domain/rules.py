"""Who may get which email, and when to try again: pure decisions."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipient:
    """What the send-time decision needs to know of a recipient."""

    age_band: str
    marketing_email: bool
    tracking_opt_out: bool
    active: bool
    suppressed: bool  # the address opted out of this category or of everything


def suppression_reason(category: str, recipient: Recipient) -> str | None:
    """Why an email of ``category`` must not go to ``recipient`` (None: it may)."""
    if recipient.suppressed:
        return "the address unsubscribed (this category or all email)"
    if category == "marketing":
        if recipient.age_band == "under_13":
            return "under 13: never marketed to (P-26)"
        if recipient.age_band == "unknown":
            return "age unknown: no marketing until known"
        if recipient.tracking_opt_out:
            return "tracking opt-out: no advertising (P-25)"
        if not recipient.marketing_email:
            return "no consent to marketing email"
    if not recipient.active and category in ("marketing", "service_announcement"):
        return "inactive account"
    return None


def audience_sql_filter(category: str) -> str:
    """The same marketing rule as a SQL condition on ``contacts`` (for in-site fan-out)."""
    if category == "marketing":
        return (
            "c.age_band NOT IN ('under_13', 'unknown') AND NOT c.tracking_opt_out"
            " AND c.marketing_email"
        )
    return "true"


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with 'full jitter' between half and all of the step."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return float(step * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not security


def smtp_failure_is_temporary(code: int | None) -> bool:
    """4xx and connection problems (no code) are retried; 5xx are permanent."""
    return code is None or 400 <= code < 500
