"""Password checks, throttled: a login and a re-authentication count failures alike.

A re-authentication (changing the password or the email address, deleting the account)
is a password check made by whoever holds an access token. Unthrottled, a stolen
five-minute token would allow guessing the password as fast as the hashing threads go;
so its failures are counted per user, under the account policy, like a login's. An
operator's are counted under the operators' policy, as their logins are: they have no
password reset, so a lock that only a reset lifts would take the identity's own
password change and its deletion requests and approvals from it for good.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from uuid import UUID

from services.accounts import store
from services.accounts.context import THROTTLE_ACCOUNT, Context
from services.accounts.domain import throttle
from services.accounts.security import verify_password
from shared.db.pool import Connection
from shared.observability import Problem
from shared.vault import Vault


def counter_of(row: store.Row | None) -> throttle.Counter | None:
    if row is None:
        return None
    return throttle.Counter(
        row["failures"], row["last_failure_at"], row["blocked_until"], row["locked"]
    )


def throttled(verdict: throttle.Verdict, what: str = "this login") -> Problem:
    """The 429 of a refused attempt; ``what`` names what an operator's lock stops."""
    seconds = max(1, math.ceil(verdict.retry_after))
    if verdict.locked and verdict.retry_after > 0:  # an operator's lock lifts by itself
        detail = f"{what} is locked for {seconds} s. An admin can unlock it sooner."
        return _wait("Too many failed logins", f"Too many failed attempts: {detail}",
                     "login-locked", seconds)  # fmt: skip
    if verdict.locked:
        return Problem(
            429,
            "Too many failed logins",
            "Too many failed attempts: logins are locked. Reset your password to unlock.",
            slug="login-locked",
        )
    return _wait("Too many failed logins", f"Too many failed attempts: try again in {seconds} s.",
                 "login-throttled", seconds)  # fmt: skip


def _wait(title: str, detail: str, slug: str, seconds: int) -> Problem:
    """429 with the seconds to wait in Retry-After."""
    return Problem(429, title, detail, slug=slug, headers={"Retry-After": str(seconds)})


async def count_failure(
    conn: Connection,
    key: bytes,
    scope: str,
    policy: throttle.ThrottlePolicy,
    counter: throttle.Counter | None,
) -> throttle.Counter:
    after = throttle.after_failure(policy, counter, datetime.now(UTC))
    await store.save_throttle(
        conn, key, scope, after.failures, after.last_failure_at, after.blocked_until, after.locked
    )
    return after


def login_key(vault: Vault, kind: str, email: str) -> bytes:
    """The account counter of logins as ``kind`` ("user" or "operator") with ``email``."""
    return vault.blind_index(f"{kind}:{email}", purpose=THROTTLE_ACCOUNT)


def reauth_key(vault: Vault, user_id: UUID) -> bytes:
    return vault.blind_index(f"reauth:{user_id}", purpose=THROTTLE_ACCOUNT)


async def reauthenticate(
    ctx: Context,
    user_id: UUID,
    stored_hash: str | None,
    password: str,
    detail: str,
    *,
    operator: bool = False,
) -> None:
    """Return if ``password`` is the user's (the operator's, if ``operator``); else raise
    403 (or 429 while throttled)."""
    key = reauth_key(ctx.vault, user_id)
    policy = ctx.account_policy()
    if operator:
        policy = throttle.for_operators(policy)
    failed = False
    async with ctx.login_turns, ctx.pool.acquire() as conn, conn.transaction():
        # Locked for the whole check: parallel guesses are judged one after the other.
        counter = counter_of(await store.lock_throttle(conn, key))
        verdict = throttle.check(policy, counter, datetime.now(UTC))
        if not verdict.allowed:
            raise throttled(verdict, "re-authentication")
        if await verify_password(stored_hash, password):
            await store.clear_throttle(conn, key)
        else:
            await count_failure(conn, key, "account", policy, counter)
            failed = True  # committed with the transaction, then answered
    if failed:
        raise Problem(403, "Wrong password", detail, slug="reauthentication-failed")


async def still_reauthenticated(
    conn: Connection, user_id: UUID, session_id: UUID, stored_hash: str | None
) -> None:
    """In the transaction that commits what a re-authentication allowed (a new password
    or address, a deletion request), the user's row locked first: 401 if the password
    checked is no longer the account's, or the session ended. A reset committed during
    the seconds of hashing replaced the one and ended the other; a request that checked
    the old password must not undo its owner's recovery."""
    if not await store.lock_if_reauthenticated(conn, user_id, session_id, stored_hash):
        raise Problem(
            401,
            "Unauthorised",
            "The password or this session changed meanwhile: sign in again.",
            slug="unauthorised",
        )


# Each address change mails a link to an address the caller names, which may be anyone's.
# So they are counted per account: five a day go free, then each next one waits longer
# (a minute, doubling, up to a day), which keeps an account from mailing strangers in
# bulk. (The answer never says whether the address has an account: nothing to test.)
ADDRESS_CHANGES = throttle.ThrottlePolicy(
    free_failures=5,
    base_seconds=60.0,
    max_seconds=86_400.0,
    lockout_failures=None,
    window=timedelta(days=1),
)


def address_change_key(vault: Vault, user_id: UUID) -> bytes:
    return vault.blind_index(f"address-change:{user_id}", purpose=THROTTLE_ACCOUNT)


async def count_address_change(conn: Connection, vault: Vault, user_id: UUID) -> None:
    """Count one change in the transaction that mails its link; 429 (rolling the change
    back) past the day's quota. The counter stays locked till the transaction ends, so
    parallel changes are counted one after another, never past the quota together."""
    key = address_change_key(vault, user_id)
    counter = counter_of(await store.lock_throttle(conn, key))
    verdict = throttle.check(ADDRESS_CHANGES, counter, datetime.now(UTC))
    if not verdict.allowed:
        seconds = max(1, math.ceil(verdict.retry_after))
        detail = f"Too many address changes today: try again in {seconds} s."
        raise _wait("Too many address changes", detail, "email-change-throttled", seconds)
    await count_failure(conn, key, "account", ADDRESS_CHANGES, counter)
