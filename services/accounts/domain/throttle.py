"""Login throttling: growing back-off after a few failures, lockout at the NIST bound.

Counts are kept per account (blind index of the submitted email, registered or not,
so the answer never tells whether an email exists) and per client address (keyed
hash). The rules here are pure; the store keeps the counts.

A user's lock lasts until a password reset (proof of the mailbox). Operators have no
reset, and anyone can fail logins at an operator's address, so a lasting lock would
let a stranger shut every admin out: theirs lifts after ``OPERATOR_LOCK`` instead, and
an admin can lift it sooner (``POST /operator/operators/{id}/unlock``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

#: How long an operator identity stays locked after the failure that locked it. Each
#: further failure locks it as long again, so past the bound a guesser gets one try
#: per hour (fewer than the back-off's four), and the identity is never lost for good.
OPERATOR_LOCK = timedelta(hours=1)


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 900.0
    lockout_failures: int | None = 100  # None: never lock (client addresses)
    window: timedelta | None = None  # counts restart after this quiet period (clients)
    lock_for: timedelta | None = None  # None: a lock lasts until cleared (users)

    def __post_init__(self) -> None:
        if self.lockout_failures is not None and self.lockout_failures > 100:
            raise ValueError("NIST SP 800-63B allows at most 100 consecutive failures")
        if self.lock_for is not None and self.lock_for <= timedelta(0):
            raise ValueError("a lock that lifts must last some time")


def for_operators(policy: ThrottlePolicy) -> ThrottlePolicy:
    """The account policy as it applies to operator identities: the same back-off and
    bound, but a lock that lifts after ``OPERATOR_LOCK``."""
    return replace(policy, lock_for=OPERATOR_LOCK)


@dataclass(frozen=True)
class Counter:
    failures: int
    last_failure_at: datetime
    blocked_until: datetime | None = None
    locked: bool = False


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds; 0 when locked until cleared
    locked: bool = False


def current_failures(policy: ThrottlePolicy, counter: Counter | None, now: datetime) -> int:
    """Failures that still count (a client's count restarts after a quiet window)."""
    if counter is None:
        return 0
    if policy.window is not None and now - counter.last_failure_at > policy.window:
        return 0
    return counter.failures


def check(policy: ThrottlePolicy, counter: Counter | None, now: datetime) -> Verdict:
    """May a login attempt be evaluated now?"""
    if counter is None:
        return Verdict(True)
    if counter.locked:
        if policy.lock_for is None:
            return Verdict(False, locked=True)
        lifts = counter.last_failure_at + policy.lock_for
        if lifts > now:
            return Verdict(False, retry_after=(lifts - now).total_seconds(), locked=True)
        # Lifted: one attempt, whose failure locks again (the count is past the bound).
        return Verdict(True)
    if current_failures(policy, counter, now) == 0:
        return Verdict(True)
    if counter.blocked_until is not None and counter.blocked_until > now:
        return Verdict(False, retry_after=(counter.blocked_until - now).total_seconds())
    return Verdict(True)


def delay_after(policy: ThrottlePolicy, failures: int) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure."""
    if failures < policy.free_failures:
        return 0.0
    exponent = min(failures - policy.free_failures, 30)
    return float(min(policy.max_seconds, policy.base_seconds * 2**exponent))


def after_failure(policy: ThrottlePolicy, counter: Counter | None, now: datetime) -> Counter:
    """The counter once one more failure is recorded."""
    failures = current_failures(policy, counter, now) + 1
    locked = policy.lockout_failures is not None and failures >= policy.lockout_failures
    delay = delay_after(policy, failures)
    return Counter(
        failures=failures,
        last_failure_at=now,
        blocked_until=now + timedelta(seconds=delay) if delay else None,
        locked=locked,
    )


def client_key(host: str) -> str:
    """What the per-client count is kept under: an IPv4 address, or an IPv6 client's /64.
    One subscriber's network gets a whole /64 and may take any address in it, so counting
    each address apart would let one client spread its guesses over 2^64 of them."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
