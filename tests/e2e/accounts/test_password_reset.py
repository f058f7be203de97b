"""Password reset by a mailed link: no account enumeration, single use, every session
ends, and a locked account is let back in (P-08)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from services.accounts.answer_floor import ANSWER_FLOOR_SECONDS
from services.accounts.config import AccountsSettings
from services.accounts.throttling import login_key
from tests.e2e.accounts.support import (
    API,
    BusTail,
    User,
    active_user,
    log_in,
    sign_up,
    unique_email,
)
from tests.support.cards import card_vault


async def _reset_token(bus: BusTail, user: User) -> str:
    notice = await bus.notice(user.id, "password_reset")
    assert notice["category"] == "transactional"
    assert notice["channels"] == ["email"]
    link: str = notice["params"]["link"]
    token: str = notice["params"]["token"]
    assert link.endswith(f"/reset-password#token={token}")  # a fragment: never sent to a server
    return token


async def _ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(f"{API}/password-resets", json={"email": email})


@pytest.mark.promise("P-08")
async def test_a_reset_link_sets_a_new_password_once_and_ends_every_session(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    registered, stranger = await _ask(client, user.email), await _ask(client, unique_email())
    assert registered.status_code == stranger.status_code == 202
    assert registered.json() == stranger.json()  # whether the email is ours stays unknown
    # Neither answers before the floor that hides a known address's extra queries.
    assert registered.elapsed.total_seconds() >= ANSWER_FLOOR_SECONDS
    assert stranger.elapsed.total_seconds() >= ANSWER_FLOOR_SECONDS
    token = await _reset_token(bus, user)

    new_password = f"pw-{uuid.uuid4().hex}"
    done = await client.post(
        f"{API}/password-resets/complete", json={"token": token, "new_password": new_password}
    )
    assert done.status_code == 204, done.text

    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 401
    refreshed = await client.post(f"{API}/sessions/refresh", json={"refresh_token": user.refresh})
    assert refreshed.status_code == 401
    old = await client.post(
        f"{API}/sessions", json={"email": user.email, "password": user.password}
    )
    assert old.status_code == 401
    user.password = new_password
    await log_in(client, user)
    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 200
    await bus.notice(user.id, "password_changed")

    # Used: a retry (its answer lost on the way) is told the password was changed, and
    # changes nothing.
    again = await client.post(
        f"{API}/password-resets/complete", json={"token": token, "new_password": "pw-another-1"}
    )
    assert again.status_code == 409, again.text
    assert again.json()["type"].endswith("/link-used")
    assert again.json()["title"] == "Link already used"
    assert "password was changed" in again.json()["detail"]
    await log_in(client, user)  # still the password the link set


@pytest.mark.promise("P-08")
async def test_a_reset_submitted_twice_at_once_sets_one_password_and_tells_the_other_so(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """A page sending its form again (a retry over a flaky network) while the first is
    still on its way: one sets the password, the other is told the link was used."""
    user = await active_user(client, bus)
    assert (await _ask(client, user.email)).status_code == 202
    token = await _reset_token(bus, user)
    new_password = f"pw-{uuid.uuid4().hex}"
    complete = {"token": token, "new_password": new_password}
    answers = await asyncio.gather(
        *(client.post(f"{API}/password-resets/complete", json=complete) for _ in range(2))
    )
    assert sorted(a.status_code for a in answers) == [204, 409], [a.text for a in answers]
    [used] = [a for a in answers if a.status_code == 409]
    assert used.json()["type"].endswith("/link-used")
    user.password = new_password
    await log_in(client, user)


async def test_resets_are_mailed_at_most_once_per_interval_and_bad_tokens_are_refused(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    for _ in range(3):
        assert (await _ask(client, user.email)).status_code == 202
    await _reset_token(bus, user)
    await asyncio.sleep(2)  # the other two answers would have queued their notices by now
    notices = [
        r
        for r in bus.records
        if r.key == user.id
        and r.value is not None
        and r.value["type"].startswith("notice.send.")
        and r.value["data"]["template"] == "password_reset"
    ]
    assert len(notices) == 1

    forged = await client.post(
        f"{API}/password-resets/complete",
        json={"token": "x" * 43, "new_password": f"pw-{uuid.uuid4().hex}"},
    )
    assert forged.status_code == 400
    assert forged.json()["type"].endswith("/link-invalid")
    short = await client.post(
        f"{API}/password-resets/complete", json={"token": "x" * 43, "new_password": "short"}
    )
    assert short.status_code == 422
    assert short.headers["content-type"].startswith("application/problem+json")


@pytest.mark.promise("P-08")
async def test_a_reset_lifts_a_login_lock(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    bound = AccountsSettings(environment="test").accounts_lockout_failures
    async with card_vault() as vault:
        key = login_key(vault, "user", user.email)  # the account's counter, as accounts keys it

    async def attempt(password: str) -> httpx.Response:
        return await client.post(
            f"{API}/sessions", json={"email": user.email, "password": password}
        )

    wrong = await attempt("nope-1234")
    assert wrong.status_code == 401
    # Reaching the bound takes hours of back-off: the count the failure just wrote is set
    # one below it (its back-off over); the failure that reaches it goes through the API.
    below = await db.execute(
        "UPDATE login_throttle SET failures = $2, locked = false, blocked_until = NULL,"
        " last_failure_at = now() - interval '1 minute'"
        " WHERE key = $1 AND scope = 'account' AND failures = 1",
        key,
        bound - 1,
    )
    assert below == "UPDATE 1"  # that failure's row: the key is this account's
    last = await attempt("nope-5678")
    assert last.status_code == 401  # answered as any wrong password...
    assert last.json()["type"].endswith("/invalid-credentials")
    counter = await db.fetchrow("SELECT failures, locked FROM login_throttle WHERE key = $1", key)
    assert counter is not None
    assert (counter["failures"], counter["locked"]) == (bound, True)  # ...and it locked
    # Locked: the right password is refused as a wrong one is, until a reset.
    for password in (user.password, "nope-9012"):
        refused = await attempt(password)
        assert refused.status_code == 429, refused.text
        assert refused.json()["type"].endswith("/login-locked")
        assert "Reset your password" in refused.json()["detail"]
        assert "retry-after" not in refused.headers  # a user's lock does not lift by itself
    assert await db.fetchval("SELECT failures FROM login_throttle WHERE key = $1", key) == bound
    # The retention sweep keeps a locked counter (services/accounts/retention.py), but
    # one it deleted before it did leaves the lock with the account.
    await db.execute("DELETE FROM login_throttle WHERE key = $1", key)
    still = await attempt(user.password)
    assert still.status_code == 429, still.text
    assert still.json()["type"].endswith("/login-locked")

    await _ask(client, user.email)
    user.password = f"pw-{uuid.uuid4().hex}"
    done = await client.post(
        f"{API}/password-resets/complete",
        json={"token": await _reset_token(bus, user), "new_password": user.password},
    )
    assert done.status_code == 204
    await log_in(client, user)


@pytest.mark.promise("P-08")
async def test_a_lock_the_counter_alone_held_becomes_the_accounts_and_a_change_lifts_it(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection
) -> None:
    """A counter locked before the account kept its own lock (users.login_locked): the
    next attempt makes the lock the account's, so the counter's retention cannot lift
    it; a password changed from a session lifts both."""
    user = await active_user(client, bus)
    bound = AccountsSettings(environment="test").accounts_lockout_failures
    async with card_vault() as vault:
        key = login_key(vault, "user", user.email)
    await db.execute(
        "INSERT INTO login_throttle (key, scope, failures, last_failure_at, locked)"
        " VALUES ($1, 'account', $2, now(), true)",
        key,
        bound,
    )
    credentials = {"email": user.email, "password": user.password}
    locked = await client.post(f"{API}/sessions", json=credentials)
    assert locked.status_code == 429
    assert locked.json()["type"].endswith("/login-locked")
    assert await db.fetchval("SELECT login_locked FROM users WHERE id = $1", uuid.UUID(user.id))
    await db.execute("DELETE FROM login_throttle WHERE key = $1", key)  # aged out, as once
    still = await client.post(f"{API}/sessions", json=credentials)
    assert still.status_code == 429, still.text

    new_password = f"pw-{uuid.uuid4().hex}"
    changed = await client.post(
        f"{API}/me/password",
        json={"current_password": user.password, "new_password": new_password},
        headers=user.headers,  # the session from before the lock
    )
    assert changed.status_code == 200, changed.text
    user.password = new_password
    await log_in(client, user)


@pytest.mark.promise("P-08")
async def test_a_reset_link_dies_when_the_password_is_changed_meanwhile(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Someone who glanced at the mailbox asks for a reset; the owner notices and changes
    the password. The link must not undo that change."""
    user = await active_user(client, bus)
    assert (await _ask(client, user.email)).status_code == 202
    token = await _reset_token(bus, user)
    owners = f"pw-{uuid.uuid4().hex}"
    changed = await client.post(
        f"{API}/me/password",
        json={"current_password": user.password, "new_password": owners},
        headers=user.headers,
    )
    assert changed.status_code == 200, changed.text

    late = await client.post(
        f"{API}/password-resets/complete",
        json={"token": token, "new_password": f"pw-{uuid.uuid4().hex}"},
    )
    assert late.status_code == 400
    assert late.json()["type"].endswith("/link-invalid")
    user.password = owners
    await log_in(client, user)  # the owner's new password still opens it


@pytest.mark.promise("P-08")
async def test_a_reset_link_dies_when_the_account_changes_its_address(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """The link went to the old address: whoever holds that mailbox once the account has
    moved on must not be able to set its password."""
    user = await active_user(client, bus)
    assert (await _ask(client, user.email)).status_code == 202
    token = await _reset_token(bus, user)
    moved = unique_email("moved")
    change = {"email": moved, "current_password": user.password}
    assert (await client.patch(f"{API}/me", json=change, headers=user.headers)).is_success
    confirm = (await bus.notice(user.id, "verify_new_email"))["params"]["token"]
    confirmed = await client.post(f"{API}/email-verifications", json={"token": confirm})
    assert confirmed.status_code == 200, confirmed.text

    late = await client.post(
        f"{API}/password-resets/complete",
        json={"token": token, "new_password": f"pw-{uuid.uuid4().hex}"},
    )
    assert late.status_code == 400
    assert late.json()["type"].endswith("/link-invalid")
    user.email = moved
    await log_in(client, user)  # the password is still the owner's


@pytest.mark.promise("P-08")
async def test_a_reset_verifies_an_address_someone_signed_up_with_and_never_verified(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """A sign-up with someone else's address, never verified, would hold it for good: the
    owner's sign-up answers as ever and mails nothing. The reset link reaches the owner,
    proves the mailbox, and the account is theirs, active, with their password."""
    squatted = await sign_up(client)
    inactive = await client.post(
        f"{API}/sessions", json={"email": squatted.email, "password": squatted.password}
    )
    assert inactive.status_code == 401  # as a wrong password: the address tells nothing
    assert (await _ask(client, squatted.email)).status_code == 202
    token = await _reset_token(bus, squatted)
    owners = f"pw-{uuid.uuid4().hex}"
    done = await client.post(
        f"{API}/password-resets/complete", json={"token": token, "new_password": owners}
    )
    assert done.status_code == 204, done.text
    squatted.password = owners
    await log_in(client, squatted)
    profile = (await client.get(f"{API}/me", headers=squatted.headers)).json()
    assert (profile["email_verified"], profile["active"]) == (True, True)
    await bus.event("user.activated.", squatted.id)
