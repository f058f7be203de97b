"""Which access tokens are revoked, as told by accounts' ``sessions.revoked`` events.

Access tokens verify by signature alone, so an ended session's token would keep working
until it expires. Every API except accounts (which reads its sessions table) refuses
such a token from what this remembers: the ended sessions, and per principal a second
before which every token was revoked. An entry is forgotten once every token it could
refuse has expired, so memory stays bounded by the revocations of one token lifetime.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from shared.auth.tokens import Claims
from shared.events.catalogue.accounts import SessionsRevoked


class Revocations:
    """In-memory revocations; ``keep`` must exceed the longest token lifetime (plus the
    clock difference between accounts and this process)."""

    def __init__(self, keep: timedelta) -> None:
        self._keep = keep.total_seconds()
        self._sessions: dict[str, float] = {}  # session id -> forget after (epoch s)
        # principal -> tokens issued before this whole second are refused
        self._principals: dict[str, int] = {}

    def apply(self, event: SessionsRevoked, now: float | None = None) -> tuple[str, ...]:
        """Remember ``event``'s revocations; returns the names of its times that name no
        instant (empty when every part was applied). ``now``: when it is read (epoch s).

        A ``revoked_at`` that cannot be read still ends its sessions: they are remembered
        a token lifetime from ``now``, later than from when they ended (the event comes
        after), so none of their tokens slips through. An ``issued_before`` that cannot
        be read is no cutoff to compare with: that part is left out (the sessions it
        ended are in ``session_ids`` too)."""
        unreadable: list[str] = []
        revoked_at = _epoch(event.revoked_at)
        if revoked_at is None:
            unreadable.append("revoked_at")
            revoked_at = time.time() if now is None else now
        # Tokens of a session ended at T were all issued before T (an ended session gets
        # no new ones): by T + keep they have expired.
        forget = revoked_at + self._keep
        for session_id in event.session_ids:
            key = str(session_id)
            self._sessions[key] = max(self._sessions.get(key, forget), forget)
        if event.issued_before is not None:
            cutoff = _epoch(event.issued_before)
            if cutoff is None:
                unreadable.append("issued_before")
            else:
                # iat counts whole seconds: a token of the same second as the cutoff may
                # be the session opened right after it (a password change's); those of
                # the revoked sessions in that second are refused by session id instead.
                second = int(cutoff)
                principal = str(event.principal_id)
                self._principals[principal] = max(self._principals.get(principal, second), second)
        return tuple(unreadable)

    def revoked(self, claims: Claims) -> bool:
        """Whether the token's session has ended (by id, or all of its principal's)."""
        if claims.sid in self._sessions:
            return True
        cutoff = self._principals.get(claims.sub)
        return cutoff is not None and claims.iat < cutoff

    def prune(self, now: float) -> None:
        """Forget what no unexpired token can be refused for any more (``now``: epoch s)."""
        self._sessions = {k: t for k, t in self._sessions.items() if t > now}
        self._principals = {k: s for k, s in self._principals.items() if s + self._keep > now}

    def __len__(self) -> int:
        return len(self._sessions) + len(self._principals)


def _epoch(at: datetime) -> float | None:
    """``at`` in epoch seconds, or None when it names no instant this process can count
    (a time without zone is taken as local time: in the year 1 that is out of range)."""
    try:
        return at.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
