"""What accounts keeps only while it serves: a round of the accounts worker deletes it.

- a client address's throttle counter (a keyed hash of the address) once its window and
  longest back-off have passed: its count would restart anyway. Account counters count
  consecutive failures towards a lock (NIST SP 800-63B) until a success, so an unlocked
  one stays until none came for ``accounts_account_counter_days`` (the fraud_abuse
  retention: one keyed by an erased user's email is not kept longer). A locked one is
  the lock itself, of an address with an account or without alike, and stays until a
  reset or a password change deletes it. Deleted earlier, an address without an account
  would answer 401 again while one with an account (which keeps its own lock,
  ``users.login_locked``) still answered 429: when the answer changed would tell
  whether the email is registered;
- expired link tokens, a day after they expired (and after the reset-mail interval,
  which reads them);
- sessions whose refresh tokens all expired more than a day ago (with those tokens):
  no token of theirs can work again;
- operators' Idempotency-Keys after ``idempotency.KEPT_HOURS``: a retry comes within
  minutes, and a key kept longer would only hold ids.
"""

from __future__ import annotations

import logging

import asyncpg

from services.accounts.config import AccountsSettings
from shared.service import idempotency
from shared.service.periodic import Periodic

log = logging.getLogger(__name__)
DAY_SECONDS = 86_400.0

_CLIENT_COUNTERS = """
DELETE FROM login_throttle
WHERE scope = 'client' AND NOT locked
  AND last_failure_at < now() - make_interval(secs => $1)
  AND (blocked_until IS NULL OR blocked_until < now())
"""
_ACCOUNT_COUNTERS = """
DELETE FROM login_throttle
WHERE scope = 'account' AND NOT locked
  AND last_failure_at < now() - make_interval(days => $1)
"""
_LINK_TOKENS = """
DELETE FROM action_tokens
WHERE expires_at < now() - interval '1 day' AND created_at < now() - make_interval(secs => $1)
"""
_SESSIONS = """
DELETE FROM sessions s
WHERE s.created_at < now() - interval '1 day'
  AND NOT EXISTS (
      SELECT 1 FROM refresh_tokens r
      WHERE r.session_id = s.id AND r.expires_at > now() - interval '1 day'
  )
"""


class Retention(Periodic):
    name = "retention"

    def __init__(self, pool: asyncpg.Pool, settings: AccountsSettings) -> None:
        super().__init__()
        self._pool = pool
        self._settings = settings

    def interval(self) -> float:
        return self._settings.accounts_retention_sweep_seconds

    async def round(self) -> bool:
        s = self._settings
        client_age = s.accounts_client_window_seconds + s.accounts_backoff_max_seconds
        reset_reads = max(float(s.accounts_reset_interval_seconds), DAY_SECONDS)
        async with self._pool.acquire() as conn, conn.transaction():
            counts = {
                "client_counters": await conn.execute(_CLIENT_COUNTERS, client_age),
                "account_counters": await conn.execute(
                    _ACCOUNT_COUNTERS, s.accounts_account_counter_days
                ),
                "link_tokens": await conn.execute(_LINK_TOKENS, reset_reads),
                "sessions": await conn.execute(_SESSIONS),
                "idempotency_keys": await conn.execute(idempotency.EXPIRED),
            }
        deleted = {what: int(status.split()[-1]) for what, status in counts.items()}
        if any(deleted.values()):
            log.info("retention: deleted %s", deleted)
        return False
