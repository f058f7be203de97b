"""Which access tokens are revoked, as told by accounts' ``sessions.revoked`` events.

Access tokens verify by signature alone, so an ended session's token would keep working
until it expires. Every API except accounts (which reads its sessions table) refuses
such a token from what this remembers: the ended sessions, and per principal a second
before which every token was revoked. An entry is forgotten once every token it could
refuse has expired, so memory stays bounded by the revocations of one token lifetime.
"""

from __future__ import annotations

from datetime import timedelta

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

    def apply(self, event: SessionsRevoked) -> None:
        # Tokens of a session ended at T were all issued before T (an ended session gets
        # no new ones): by T + keep they have expired.
        forget = event.revoked_at.timestamp() + self._keep
        for session_id in event.session_ids:
            key = str(session_id)
            self._sessions[key] = max(self._sessions.get(key, forget), forget)
        if event.issued_before is not None:
            # iat counts whole seconds: a token of the same second as the cutoff may be
            # the session opened right after it (a password change's); those of the
            # revoked sessions in that second are refused by session id instead.
            second = int(event.issued_before.timestamp())
            principal = str(event.principal_id)
            self._principals[principal] = max(self._principals.get(principal, second), second)

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
