"""Sign-up, email verification, guardian consent, login, refresh, logout, password change.

No answer tells whether an email is registered: sign-up answers the same (with an id
that leads nowhere for a taken email, whose owner is mailed instead), login answers the
same body after the same argon2 work, and throttling counts failures per submitted email
whether it exists or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated
from uuid import UUID, uuid4

import asyncpg
from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, EmailStr, Field

from services.accounts import store
from services.accounts.answer_floor import answer_floor
from services.accounts.cards import publish_card
from services.accounts.context import (
    BIRTH_DATE,
    EMAIL,
    EMAIL_INDEX,
    GUARDIAN_EMAIL,
    NAME,
    OPERATOR_EMAIL_INDEX,
    PENDING_EMAIL,
    THROTTLE_CLIENT,
    Context,
    Ctx,
    emit,
    notify,
    refuse_card_numbers,
    refuse_own_guardian,
)
from services.accounts.domain import throttle
from services.accounts.domain.age import (
    AgeBand,
    age_band,
    earliest_today,
    latest_today,
    plausible_birth_date,
)
from services.accounts.lapsed_signups import lapsing
from services.accounts.links import link_invalid, link_used, mail_action_link
from services.accounts.reset_links import mail_reset_link
from services.accounts.security import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    hash_password,
    secret_hash,
    verify_password,
)
from services.accounts.sessions import (
    RefreshRefused,
    TokenPair,
    before_own_password,
    rotate,
    start_session,
)
from services.accounts.throttling import (
    count_failure,
    counter_of,
    login_key,
    reauthenticate,
    still_reauthenticated,
    throttled,
)
from shared.auth import Claims, CurrentUser, current_claims
from shared.db.pool import Connection
from shared.events import Event
from shared.events.catalogue.accounts import (
    ProfileUpdated,
    SessionEndReason,
    UserActivated,
    UserRegistered,
)
from shared.observability import Problem
from shared.vault import Vault

router = APIRouter(tags=["authentication"])

Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]


class SignUp(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    password: Password
    birth_date: date | None = None
    guardian_email: EmailStr | None = Field(
        None, description="Required under 13: the parent or guardian who must consent."
    )


class SignedUp(BaseModel):
    user_id: UUID
    status: str = "verification_sent"


class LinkToken(BaseModel):
    token: str = Field(min_length=10, max_length=200)


class LinkUsed(BaseModel):
    status: str
    active: bool


class Credentials(BaseModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class Refresh(BaseModel):
    refresh_token: str = Field(min_length=10, max_length=200)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new_password: Password


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("/users", status_code=status.HTTP_202_ACCEPTED, response_model=SignedUp)
async def sign_up(body: SignUp, ctx: Ctx) -> SignedUp:
    """Create an account; it is active once the email is verified (and, under 13, once
    the guardian consented through the link mailed to them)."""
    refuse_card_numbers(name=body.name, email=body.email, guardian_email=body.guardian_email)
    now = _now()
    if body.birth_date is not None and not plausible_birth_date(body.birth_date, latest_today(now)):
        raise Problem(
            422, "Invalid birth date", "The birth date is not plausible.", slug="validation"
        )
    band = age_band(body.birth_date, earliest_today(now))
    if band == "under_13" and body.guardian_email is None:
        raise Problem(
            422,
            "Parental consent needed",
            "Under 13, a parent or guardian's email is required: they must consent.",
            slug="guardian-required",
        )
    if band == "under_13":
        own = ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX)
        refuse_own_guardian(ctx.vault, own, body.guardian_email, "guardian_email")
    password_hash = await hash_password(body.password)
    async with answer_floor():  # a new account costs more work than a taken address
        return await _register(ctx, body, band, password_hash)


async def _register(ctx: Context, body: SignUp, band: AgeBand, password_hash: str) -> SignedUp:
    index = ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX)
    user_id = uuid4()
    async with ctx.pool.acquire() as conn, conn.transaction():
        if await _tell_the_owner(ctx, conn, index):
            # Same answer as a new account: whether the email is taken stays unknown.
            return SignedUp(user_id=uuid4())
    vault = ctx.vault
    guardian = body.guardian_email if band == "under_13" else None
    columns = {
        "id": user_id,
        "email_index": index,
        "email": await vault.seal(user_id, body.email, purpose=EMAIL),
        "name": await vault.seal(user_id, body.name, purpose=NAME),
        "password_hash": password_hash,
        "birth_date": (
            await vault.seal(user_id, body.birth_date.isoformat(), purpose=BIRTH_DATE)
            if body.birth_date
            else None
        ),
        "age_band": band,
        "guardian_email": (
            await vault.seal(user_id, guardian, purpose=GUARDIAN_EMAIL) if guardian else None
        ),
        "guardian_consented": False if band == "under_13" else None,
    }
    async with ctx.pool.acquire() as conn, conn.transaction():
        inserted = await store.insert_user(conn, **columns)
    if not inserted:
        # Lost a race for the same email: its owner is told as if it had come later (a
        # squatter's sign-up racing the owner's must not go unmentioned).
        async with ctx.pool.acquire() as conn, conn.transaction():
            await _tell_the_owner(ctx, conn, index)
        return SignedUp(user_id=uuid4())
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await store.user_by_id(conn, user_id)
        assert user is not None
        registered = UserRegistered(
            user_id=user_id, age_band=band, awaiting_parental_consent=band == "under_13"
        )
        await publish_card(conn, vault, user, after=[registered])
        await mail_action_link(
            ctx, conn, user_id, purpose="verify_email", template="verify_email",
            path="verify-email", email_index=index,
        )  # fmt: skip
        if band == "under_13":
            await mail_action_link(
                ctx, conn, user_id, purpose="guardian_consent", template="parental_consent",
                path="guardian-consent", recipient="guardian",
            )  # fmt: skip
    return SignedUp(user_id=user_id)


async def _tell_the_owner(ctx: Context, conn: Connection, index: bytes) -> bool:
    """Whether an account has the address; if so, its owner is mailed a password-reset
    link (at most one per interval) saying someone tried to sign up with it.

    Someone may have signed up first with another's address, choosing the password (a
    pre-hijack): the owner's own sign-up then makes nothing. The mail tells them, and
    its link gives them the account under their own password, confirming the address.
    """
    existing = await store.user_by_email_index(conn, index)
    if existing is None:
        return False
    # One mail at a time. A row another transaction holds (an export reading it, a
    # racing sign-up mailing) is not waited for: the wait would outlast the answer floor
    # and tell that the address is registered. That attempt mails nothing.
    user = await conn.fetchrow(
        "SELECT * FROM users WHERE id = $1 AND email_index = $2 FOR UPDATE SKIP LOCKED",
        existing["id"],
        index,
    )
    if user is not None:
        await mail_reset_link(
            ctx, conn, user["id"], template="signup_attempted",
            params={"account_state": _account_state(user)},
        )  # fmt: skip
    return True


def _account_state(user: asyncpg.Record) -> str:
    """What the owner is told of the account: ``unconfirmed`` (its address never was:
    someone else may have made it), ``awaiting_consent`` (a child's, waiting for a
    guardian) or ``active``."""
    if not user["email_verified"]:
        return "unconfirmed"
    return "active" if user["active"] else "awaiting_consent"


async def _use_link(ctx: Context, token: str, purpose: str) -> LinkUsed:
    async with ctx.pool.acquire() as conn, conn.transaction():
        used = await _spend_link(ctx, conn, token, purpose)
    if used is None:
        raise Problem(
            409,
            "Email unavailable",
            "Another account uses this address: it was not added to this one.",
            slug="email-unavailable",
        )
    return used


async def _spend_link(ctx: Context, conn: Connection, token: str, purpose: str) -> LinkUsed | None:
    """Use the link's token; None when it confirms an address another account has (the
    token is spent; the waiting change waits out its time)."""
    # The user's row first, then the token: the order an address change takes them in
    # (it revokes links under the row's lock), so the two never wait on each other.
    owner = await store.action_token_owner(conn, secret_hash(token), purpose)
    user = await store.user_by_id(conn, owner, lock=True) if owner is not None else None
    if user is None:
        raise link_invalid()
    spent = await store.use_action_token(conn, secret_hash(token), purpose)
    if spent is None:
        raise await _not_spent(conn, user, secret_hash(token), purpose)
    user_id = spent["user_id"]
    confirms = spent["email_index"]
    after: list[Event] = []
    if confirms is not None and confirms != user["email_index"]:
        if confirms != user["pending_email_index"]:
            raise link_invalid("This link confirms an address the account no longer has.")
        if not await _take_pending_address(ctx, conn, user):
            return None
        after.append(ProfileUpdated(user_id=user_id, fields=("email", "pending_email")))
    changes: dict[str, object] = (
        {"email_verified": True} if purpose == "verify_email" else {"guardian_consented": True}
    )
    active = await confirm_account_facts(ctx, conn, user, changes, after)
    return LinkUsed(status="confirmed", active=active)


async def _not_spent(conn: Connection, user: store.Row, token_hash: bytes, purpose: str) -> Problem:
    """Why a link of the (locked) user's could not be spent: used already, and what it
    proved still holds (a retry whose first answer was lost), or invalid."""
    used = await store.spent_action_token(conn, token_hash, purpose)
    if used is None:
        return link_invalid()  # expired
    if purpose == "guardian_consent":
        if user["guardian_consented"]:
            return link_used("This link was already used: your consent is recorded.")
    elif user["email_verified"] and used["email_index"] in (None, user["email_index"]):
        # The address it confirms is the account's, confirmed. One the account does not
        # have (another account's, or given up since) stays link-invalid.
        return link_used("This link was already used: this email address is confirmed.")
    return link_invalid()


async def confirm_account_facts(
    ctx: Context,
    conn: Connection,
    user: store.Row,
    changes: dict[str, object],
    after: Sequence[Event] = (),
) -> bool:
    """Store what a mailed link proved (``email_verified``, ``guardian_consented``); the
    account becomes active once its address is verified and, under 13, a guardian
    consented. Returns whether it is active."""
    user_id = user["id"]
    verified = changes.get("email_verified", user["email_verified"])
    consented = changes.get("guardian_consented", user["guardian_consented"])
    active = bool(verified) and (user["age_band"] != "under_13" or bool(consented))
    if active and not user["active"] and await lapsing(conn, user_id):
        active = False  # its erasure as a lapsed sign-up is under way: it stays closed
    if active and not user["active"]:
        changes["active"] = True
    await store.update_user(conn, user_id, **changes)
    if changes.get("active"):
        await emit(conn, UserActivated(user_id=user_id), user_id)
    if after or changes.get("active"):
        await publish_card(conn, ctx.vault, await _user(conn, user_id), after=after)
    return active


async def _take_pending_address(ctx: Context, conn: Connection, user: store.Row) -> bool:
    """Make the pending address the account's own; False when another account has it,
    whether from before or by winning a race for it now. The link is spent either way,
    and the pending address then waits out its time as any unconfirmed one does: were it
    dropped at once, the account's profile would tell its owner the address is taken."""
    uid, vault = user["id"], ctx.vault
    address = await vault.open(uid, user["pending_email"], purpose=PENDING_EMAIL)
    moved = {
        "email": await vault.seal(uid, address, purpose=EMAIL),
        "email_index": user["pending_email_index"],
        **store.NO_PENDING_ADDRESS,
        **store.LOCK_LEFT_BEHIND,
    }
    try:
        async with conn.transaction():  # a savepoint: losing the address keeps the spend
            await store.update_user(conn, uid, **moved)
    except asyncpg.UniqueViolationError:  # users.email_index is unique
        return False
    await store.revoke_address_links(conn, uid, user["pending_email_index"])
    await store.revoke_password_resets(conn, uid)
    return True


async def _user(conn: Connection, user_id: UUID) -> store.Row:
    user = await store.user_by_id(conn, user_id)
    assert user is not None
    return user


@router.post("/email-verifications", response_model=LinkUsed)
async def verify_email(body: LinkToken, ctx: Ctx) -> LinkUsed:
    """Confirm an email address with the token of the link mailed to it. A link used
    already answers ``409 link-used`` while the address it confirmed is the account's (a
    retry whose answer was lost); an unknown, expired or revoked one ``400 link-invalid``."""
    return await _use_link(ctx, body.token, "verify_email")


@router.post("/guardian-consents", response_model=LinkUsed)
async def guardian_consent(body: LinkToken, ctx: Ctx) -> LinkUsed:
    """A guardian consents to an under-13 account with the token of the link mailed to
    them. A link used already answers ``409 link-used`` (the consent is recorded); an
    unknown or expired one ``400 link-invalid``."""
    return await _use_link(ctx, body.token, "guardian_consent")


def _client_address(request: Request) -> str:
    # Not the raw X-Forwarded-For: any caller reaching the API itself (a container on the
    # compose network) could claim a new address per attempt and escape its back-off. The
    # app resolved the client from it only when the peer is a trusted proxy (the gateway,
    # which overwrites it with the address it saw; shared.service.forwarded).
    return throttle.client_key(request.client.host if request.client else "unknown")


INVALID_CREDENTIALS = ("Invalid credentials", "The email or password is wrong.")
# A user is answered alike whether the password was wrong or the account is not active
# yet. Telling "not active" only to whoever knew the password still told someone who
# signed up with another's address, choosing the password, whether it was free.
USER_INVALID_CREDENTIALS = (
    "Invalid credentials",
    "The email or password is wrong, or the account is not active yet: confirm the email"
    " address with the link we sent (a password reset confirms it too); under 13, a parent"
    " or guardian must consent first.",
)


async def _login(
    ctx: Context, request: Request, body: Credentials, kind: str
) -> tuple[TokenPair | None, Problem | None]:
    vault = ctx.vault
    account_key = login_key(vault, kind, body.email)
    client_key = vault.blind_index(_client_address(request), purpose=THROTTLE_CLIENT)
    account_policy, client_policy = ctx.account_policy(), ctx.client_policy()
    if kind == "operator":
        account_policy = throttle.for_operators(account_policy)
    refused = Problem(
        401,
        *(USER_INVALID_CREDENTIALS if kind == "user" else INVALID_CREDENTIALS),
        slug="invalid-credentials",
    )
    async with ctx.login_turns, ctx.pool.acquire() as conn, conn.transaction():
        # The account's row is locked for the whole attempt: parallel guesses at one
        # account are evaluated one after the other, each seeing the previous failure.
        account = counter_of(await store.lock_throttle(conn, account_key))
        # Read once the lock is held, so serialised guesses see each other's client count.
        client = counter_of(await store.throttle_counter(conn, client_key))
        now = datetime.now(UTC)
        for policy, counter in ((account_policy, account), (client_policy, client)):
            verdict = throttle.check(policy, counter, now)
            if not verdict.allowed:
                if verdict.locked and kind == "user" and counter is account:
                    # A lock the counter alone holds (set before users.login_locked
                    # existed) becomes the account's too, as one set since is.
                    await _lock_account_of(ctx, conn, body.email)
                return None, throttled(verdict)
        if kind == "operator":
            principal = await store.operator_by_email_index(
                conn, vault.blind_index(body.email, purpose=OPERATOR_EMAIL_INDEX)
            )
        else:
            principal = await store.user_by_email_index(
                conn, vault.blind_index(body.email, purpose=EMAIL_INDEX)
            )
        if kind == "user" and principal is not None and principal["login_locked"]:
            # The lock is the account's: its counter may be gone (aged out before
            # retention.py kept it). An address change leaves it behind (store.py).
            return None, throttled(throttle.Verdict(False, locked=True))
        stored = principal["password_hash"] if principal is not None else None
        verified = await verify_password(stored, body.password)
        # Not active yet: counted as a failure too, so that the throttle's count (a 429
        # after the free failures) tells no more than the answer does.
        inactive = kind == "user" and principal is not None and not principal["active"]
        if not verified or inactive:
            counted = await count_failure(conn, account_key, "account", account_policy, account)
            if counted.locked and kind == "user" and principal is not None:
                await store.lock_login(conn, principal["id"])
            # Locked now, after the account's row (the order every login takes them in),
            # and read again: parallel failures from one address at different accounts
            # each add one, none overwrites another. Not locked for the whole attempt,
            # so one address's logins (a shared network's) still hash side by side.
            client = counter_of(await store.lock_throttle(conn, client_key, "client"))
            await count_failure(conn, client_key, "client", client_policy, client)
            return None, refused
        await store.clear_throttle(conn, account_key)
        assert principal is not None
        # Changed while it was verified: a password change or reset (an operator's
        # disabling or new roles too), which ends every session, must not miss this one.
        # Held from here to the session's commit, so a change either waits for the
        # session (and ends it) or comes first.
        if kind == "user":
            if not await store.hold_password(conn, principal["id"], stored):
                return None, refused
            # The password proves the owner: an address an operator set is theirs now,
            # and reset links may go to it (migration 024).
            await store.owner_signed_in(conn, principal["id"])
        else:
            assert stored is not None  # it verified
            principal = await store.hold_operator(conn, principal["id"], stored)
            if principal is None:
                return None, refused
        return await start_session(ctx, conn, principal, kind), None


async def _lock_account_of(ctx: Context, conn: Connection, email: str) -> None:
    principal = await store.user_by_email_index(
        conn, ctx.vault.blind_index(email, purpose=EMAIL_INDEX)
    )
    if principal is not None and not principal["login_locked"]:
        await store.lock_login(conn, principal["id"])


@router.post("/sessions", response_model=TokenPair)
async def log_in(body: Credentials, request: Request, ctx: Ctx) -> TokenPair:
    """Log in: a 5-minute access token and a refresh token. Failures are throttled."""
    pair, problem = await _login(ctx, request, body, "user")
    if problem is not None:
        raise problem
    assert pair is not None
    return pair


@router.post("/operator/sessions", response_model=TokenPair, tags=["operators"])
async def operator_log_in(body: Credentials, request: Request, ctx: Ctx) -> TokenPair:
    """Operators log in here, with identities separate from users'."""
    pair, problem = await _login(ctx, request, body, "operator")
    if problem is not None:
        raise problem
    assert pair is not None
    return pair


@router.post("/sessions/refresh", response_model=TokenPair)
async def refresh(body: Refresh, ctx: Ctx) -> TokenPair:
    """Trade a refresh token for a new pair; a reused one revokes its whole session."""
    refused = False
    async with ctx.pool.acquire() as conn, conn.transaction():
        try:
            pair = await rotate(ctx, conn, body.refresh_token)
        except RefreshRefused:
            refused = True  # commit the revocation, then answer
    if refused:
        raise Problem(401, "Unauthorised", "This refresh token is not valid.", slug="unauthorised")
    return pair


@router.delete("/sessions/current", status_code=status.HTTP_204_NO_CONTENT)
@before_own_password
async def log_out(claims: Annotated[Claims, Depends(current_claims)], ctx: Ctx) -> None:
    """End the session of this token: its access and refresh tokens stop working."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await store.revoke_session(conn, UUID(claims.sid), "logout")


@router.post("/me/password", response_model=TokenPair)
async def change_password(body: PasswordChange, user: CurrentUser, ctx: Ctx) -> TokenPair:
    """Change the password: every session ends (old tokens fail at once); a new one starts."""
    user_id = UUID(user.sub)
    async with ctx.pool.acquire() as conn:
        row = await store.user_by_id(conn, user_id)
    stored = row["password_hash"] if row is not None else None
    await reauthenticate(
        ctx, user_id, stored, body.current_password, "The current password is wrong."
    )
    new_hash = await hash_password(body.new_password)
    assert row is not None  # reauthenticate refused a missing user
    email = await ctx.vault.open(user_id, row["email"], purpose=EMAIL)
    async with ctx.pool.acquire() as conn, conn.transaction():
        # A new password lifts a login lock, the counter's too: before the user's row,
        # in the order a login takes them.
        await store.clear_throttle(conn, login_key(ctx.vault, "user", email))
        await still_reauthenticated(conn, user_id, UUID(user.sid), stored)
        await replace_password(conn, ctx.vault, user_id, new_hash, "password-changed")
        fresh = await store.user_by_id(conn, user_id)
        assert fresh is not None
        pair = await start_session(ctx, conn, fresh, "user")
    return pair


async def replace_password(
    conn: Connection, vault: Vault, user_id: UUID, new_hash: str, reason: SessionEndReason
) -> None:
    """Store a new password hash: every session ends and the user is told, by email too.
    An address change waiting for its link is dropped, and the link revoked: whoever
    asked for it knew the old password, and may be who this change locks out."""
    before = await store.user_by_id(conn, user_id, lock=True)
    assert before is not None
    changes: dict[str, object] = {"password_hash": new_hash, "login_locked": False}
    if before["pending_email"] is not None:
        changes.update(store.NO_PENDING_ADDRESS)
    changed = await store.update_user_returning(conn, user_id, **changes)
    assert changed is not None
    await store.revoke_address_links(conn, user_id, before["email_index"])
    # A reset link asked for before the change would still undo it: whoever asked for it
    # (a glance at the mailbox) may be who the change locks out.
    await store.revoke_password_resets(conn, user_id)
    if before["pending_email"] is not None:
        dropped = ProfileUpdated(user_id=user_id, fields=("pending_email",))
        await publish_card(conn, vault, changed, after=[dropped])
    await store.revoke_sessions_of(conn, user_id, reason)
    await notify(
        conn,
        template="password_changed",
        category="account_security",
        user_ids=(user_id,),
        params={},
    )
