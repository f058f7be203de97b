"""The operator API: need-to-know per role (domain.roles), every read or change of a
user's personal data audited in the same transaction (append-only audit_log)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID, uuid4

import asyncpg
from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, EmailStr, Field

from services.accounts import audit_chain, cancel_window, store
from services.accounts.cards import publish_card
from services.accounts.context import (
    DEVICE_MODEL,
    EMAIL,
    EMAIL_INDEX,
    GUARDIAN_EMAIL,
    MESSAGE_BODY,
    NAME,
    OPERATOR_EMAIL,
    OPERATOR_EMAIL_INDEX,
    Context,
    Ctx,
    emit,
    not_found,
    refuse_card_numbers,
    refuse_own_guardian,
)
from services.accounts.domain import fields as field_rules
from services.accounts.domain.roles import ADMIN, PERMISSIONS
from services.accounts.invoices import (
    REFERENCE,
    Invoice,
    InvoiceIn,
    invoice_out,
    new_invoice_columns,
)
from services.accounts.links import mail_action_link
from services.accounts.security import MAX_PASSWORD, MIN_PASSWORD, hash_password
from services.accounts.sessions import (
    TokenPair,
    before_own_password,
    has_own_password,
    password_change_required,
    start_session,
)
from services.accounts.throttling import login_key, reauth_key, reauthenticate
from shared import email_links, email_subjects
from shared.auth import Claims, OperatorRole, require_roles
from shared.auth.dependencies import VerifiedBearer
from shared.db.pool import Connection
from shared.events.catalogue.accounts import (
    DeletionRequested,
    IncidentDeclared,
    PolicyVersionPublished,
    ProfileUpdated,
    RequestReplied,
)
from shared.events.catalogue.notifier import SendNotice
from shared.observability import Problem
from shared.service import idempotency
from shared.service.answers import Answer, Timestamp
from shared.service.idempotency import IdempotencyKey
from shared.service.kept_text import refuse_personal_data
from shared.vault import SubjectShredded

router = APIRouter(prefix="/operator", tags=["operators"])


def allowed(permission: str) -> Any:
    return Depends(require_roles(*PERMISSIONS[permission]))


def _an_operator(claims: Claims) -> None:
    if claims.kind != "operator":
        raise Problem(403, "Forbidden", "This endpoint is for operators.", slug="forbidden")


# Any operator, whatever their roles (none, until they set their own password).
any_operator = VerifiedBearer(_an_operator)


Operator = Claims
Purpose = Annotated[
    str, Query(min_length=3, max_length=200, description="Why the data is needed (audited).")
]


class OperatorIn(BaseModel):
    email: EmailStr
    password: str = Field(
        min_length=MIN_PASSWORD,
        max_length=MAX_PASSWORD,
        description="A provisional password: until the operator sets their own (POST"
        " /operator/me/password) they can do nothing else, and never request or approve"
        " a deletion (P-15).",
    )
    roles: list[OperatorRole] = Field(min_length=1)


class OperatorOut(BaseModel):
    id: UUID
    roles: list[str]


class UnlockIn(BaseModel):
    reason: str = Field(min_length=3, max_length=200, description="Why (audited).")


class OperatorRolesIn(UnlockIn):
    roles: list[OperatorRole] = Field(min_length=1, description="The operator's roles from now.")


class OperatorState(BaseModel):
    id: UUID
    roles: list[str]
    own_password: bool = Field(
        description="Whether the operator set their password themselves (not only the"
        " operator who created the identity)."
    )
    disabled_at: datetime | None


class OperatorPasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class UserFound(BaseModel):
    id: UUID
    name: str
    email: str
    active: bool


class UserRecord(UserFound):
    email_verified: bool
    age_band: str
    locale: str
    created_at: datetime
    devices: list[dict[str, Any]]
    request_ids: list[UUID]


class UserChanged(BaseModel):
    """What a change answers: the id and the fields changed, as written. Nothing else
    of the user is shown, so the change is also the only access the audit row names."""

    id: UUID
    fields: list[str]
    name: str | None = None
    email: str | None = None


class UserChange(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    email: EmailStr | None = None
    # Kept in the audit log for good: a code (a ticket number), never a sentence or an
    # address, so no one's personal data slips into a row no erasure can touch (P-14).
    request_reference: str = Field(
        min_length=3,
        max_length=64,
        pattern=REFERENCE,
        description="Reference of the user's emailed request: a code such as a ticket"
        " number (letters, digits and . _ / : -), holding no personal data.",
    )
    purpose: str = Field(min_length=3, max_length=200)


class RequestListed(BaseModel):
    id: UUID
    category: str
    status: str
    created_at: datetime


class ReplyIn(BaseModel):
    text: str = Field(min_length=1, max_length=5000)


class ReplyOut(BaseModel):
    reply_id: UUID
    request_id: UUID


class ThreadMessage(Answer):
    id: UUID
    author: Literal["user", "operator"]
    created_at: Timestamp
    text: str


class OperatorThread(Answer):
    """A user's request and its thread, as support reads it (audited)."""

    id: UUID
    user_id: UUID
    category: str
    status: str = Field(description="open (the user wrote last) or answered.")
    messages: list[ThreadMessage] = Field(description="Oldest first.")


class Stats(BaseModel):
    users: int
    active_users: int
    users_by_age_band: dict[str, int]
    devices_by_damage_state: dict[str, int]
    open_requests: int


class AuditRow(BaseModel):
    id: int
    operator_id: UUID
    subject_id: UUID
    action: str
    fields: list[str]
    purpose: str
    request_reference: str | None
    at: datetime
    chain_seq: int
    chain: str = Field(description="The row's link in the audit hash chain (sha256, hex).")


class AuditChainOut(BaseModel):
    rows: int
    head_seq: int
    head: str
    intact: bool
    broken_at: int | None = Field(None, description="The first chain_seq that does not hold.")
    reason: str | None = None


# How far ahead a policy version may take effect or an announcement be sent. A date at
# the end of time is a typo, not a plan: past 9999 in UTC it cannot even be stored, and a
# policy version taking effect in 9999 would make every later one "out of order" for good.
SCHEDULE_HORIZON_YEARS = 5
SCHEDULE_HORIZON = timedelta(days=365 * SCHEDULE_HORIZON_YEARS + 1)


def within_horizon(value: datetime) -> datetime:
    """``value`` if it is an instant at most the horizon ahead; ValueError (422) if not."""
    try:
        instant = value.astimezone(UTC)  # as stored: 9999-12-31T23:59-14:00 is past 9999
    except OverflowError:
        raise ValueError("is out of range") from None
    if instant > datetime.now(UTC) + SCHEDULE_HORIZON:
        raise ValueError(f"must be at most {SCHEDULE_HORIZON_YEARS} years from now")
    return value


# With its time zone: a bare date or time names no instant (422, not a guess).
Scheduled = Annotated[AwareDatetime, AfterValidator(within_horizon)]


class PolicyIn(BaseModel):
    version: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")
    summary: str = Field(min_length=1, max_length=2000)
    effective_at: Scheduled | None = None


class PolicyOut(BaseModel):
    version: str
    effective_at: datetime


# A title becomes an email subject, after the notifier's prefix ("Security notice: "):
# subjects have at most email_subjects.MAX_SUBJECT_CHARS characters.
TITLE_CHARS = 120


class AnnouncementIn(BaseModel):
    title: str = Field(min_length=1, max_length=TITLE_CHARS)
    message: str = Field(min_length=1, max_length=5000)
    send_at: Scheduled | None = None


class Announced(BaseModel):
    id: UUID
    notice_id: UUID


class IncidentIn(BaseModel):
    title: str = Field(min_length=1, max_length=TITLE_CHARS)
    message: str = Field(min_length=1, max_length=5000)
    audience: Literal["all", "listed"]
    user_ids: list[UUID] = Field(
        default_factory=list,
        max_length=20_000,
        description="The affected users (audience listed): at most 20,000 an incident, so"
        " that its event fits a Kafka record (1 MiB); more go as further incidents.",
    )


class IncidentOut(BaseModel):
    id: UUID
    affected: int


class RecipientIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["processor", "partner"]
    purpose: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_.-]+$")
    allowed_fields: list[str] = Field(
        min_length=1,
        max_length=20,
        description="The fields its records may hold; user_id is always one of them (added"
        " if not given): the erasures forwarded to a recipient name the user by it.",
    )


class RecipientOut(BaseModel):
    id: UUID
    name: str
    kind: str
    purpose: str
    allowed_fields: list[str]


class Export(BaseModel):
    export_id: UUID = Field(
        description="The export this page is part of: every page of it has this id."
    )
    recipient_id: UUID
    purpose: str
    records: list[dict[str, Any]] = Field(
        description="This page's records, in user id order: each user once in an export."
    )
    next: str | None = Field(
        default=None,
        description="While more users follow: the cursor of this export's next page (pass"
        " it as `after`, as the Link header does); null on the last page.",
    )


class OperatorReauthentication(BaseModel):
    password: str = Field(
        min_length=1,
        max_length=MAX_PASSWORD,
        description="The operator's own password: a deletion needs re-authentication (P-15),"
        " so an access token alone (a stolen one, say) cannot start or approve one.",
    )


class OperatorDeletionIn(OperatorReauthentication):
    reason: str = Field(min_length=3, max_length=500)


class DeletionClosing(BaseModel):
    reason: str = Field(
        min_length=3, max_length=200, description="Why it is withdrawn or rejected (audited)."
    )


class OperatorDeletion(BaseModel):
    id: UUID
    user_id: UUID
    status: str = Field(
        description="pending_approval (awaiting a second operator), requested (approved:"
        " the user's grace period runs), withdrawn (by its requester), rejected (by another"
        " operator), expired (not approved in time), and later confirmed, cancelled or"
        " erased."
    )
    requested_by: UUID | None
    approved_by: UUID | None


def _operator_id(claims: Claims) -> UUID:
    return UUID(claims.sub)


# -- operators -------------------------------------------------------------------------


@router.post("/operators", response_model=OperatorOut, status_code=status.HTTP_201_CREATED)
async def create_operator(
    body: OperatorIn, ctx: Ctx, op: Annotated[Operator, allowed("operators.create")]
) -> OperatorOut:
    """Admins create operator identities (separate from users) with their roles."""
    refuse_card_numbers(email=body.email)  # sealed and kept: an address may be all digits
    operator_id = uuid4()
    index = ctx.vault.blind_index(body.email, purpose=OPERATOR_EMAIL_INDEX)
    sealed = await ctx.vault.seal(operator_id, body.email, purpose=OPERATOR_EMAIL)
    password_hash = await hash_password(body.password)
    roles = sorted(set(body.roles))
    async with ctx.pool.acquire() as conn:
        created = await store.insert_operator(
            conn, operator_id, index, sealed, password_hash, roles, _operator_id(op)
        )
    if not created:
        raise Problem(
            409, "Operator exists", "An operator with this email exists.", slug="operator-exists"
        )
    return OperatorOut(id=operator_id, roles=roles)


@router.post("/operators/{operator_id}/unlock", status_code=status.HTTP_204_NO_CONTENT)
async def unlock_operator(
    operator_id: UUID,
    body: UnlockIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("operators.create")],
) -> None:
    """Admins lift an operator identity's login lock and back-off at once, and those of
    its re-authentication (operators have no password reset; a lock also lifts by itself
    after an hour). Audited.

    Users are not unlocked here: a password reset lifts their lock once they prove
    control of their mailbox, which an unlock would skip while a guesser may be at work.
    """
    refuse_card_numbers(reason=body.reason)
    refuse_personal_data(reason=body.reason)
    async with ctx.pool.acquire() as conn, conn.transaction():
        operator = await store.operator_by_id(conn, operator_id)
        if operator is None:
            raise not_found("operator")
        email = await ctx.vault.open(operator_id, operator["email"], purpose=OPERATOR_EMAIL)
        await store.clear_throttle(conn, login_key(ctx.vault, "operator", email))
        # Failed password checks from a session lock apart from logins: both are lifted,
        # or an identity whose token a guesser held could never set its password again.
        await store.clear_throttle(conn, reauth_key(ctx.vault, operator_id))
        await store.audit(
            conn, _operator_id(op), operator_id, "change", ["login_throttle"], body.reason
        )


def _state(row: store.Row) -> OperatorState:
    return OperatorState(
        id=row["id"],
        roles=list(row["roles"]),
        own_password=has_own_password(row),
        disabled_at=row["disabled_at"],
    )


async def _lock_operator_as_admin(
    conn: Connection, admin: UUID, operator_id: UUID
) -> tuple[set[UUID], store.Row]:
    """The active admins (locked) and the operator (locked, active): 403 if ``admin`` is
    no longer an active admin, 404 if there is no such operator, 409 if it is disabled."""
    admins = await store.lock_active_admins(conn)
    if admin not in admins:  # disabled or demoted since the token was issued
        raise Problem(403, "Forbidden", "You are no longer an admin.", slug="forbidden")
    operator = await conn.fetchrow("SELECT * FROM operators WHERE id = $1 FOR UPDATE", operator_id)
    if operator is None:
        raise not_found("operator")
    if operator["disabled_at"] is not None:
        raise Problem(
            409, "Operator disabled", "This operator is disabled.", slug="operator-disabled"
        )
    return admins, operator


def _last_admin() -> Problem:
    return Problem(
        409,
        "Last admin",
        "This is the last admin: make another operator an admin first.",
        slug="last-admin",
    )


@router.post("/operators/{operator_id}/disable", response_model=OperatorState)
async def disable_operator(
    operator_id: UUID,
    body: UnlockIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("operators.disable")],
) -> OperatorState:
    """Admins disable an operator identity: it can no longer log in, its sessions end at
    once (its tokens fail here now, in the other APIs within seconds) and it cannot
    re-authenticate. Audited. Not one's own identity, nor the last admin."""
    refuse_card_numbers(reason=body.reason)
    refuse_personal_data(reason=body.reason)
    admin = _operator_id(op)
    if operator_id == admin:
        raise Problem(
            403,
            "Own identity",
            "An admin cannot disable their own identity: another admin can.",
            slug="own-identity",
        )
    async with ctx.pool.acquire() as conn, conn.transaction():
        admins, _ = await _lock_operator_as_admin(conn, admin, operator_id)
        if not admins - {operator_id}:
            raise _last_admin()
        row = await conn.fetchrow(
            "UPDATE operators SET disabled_at = now() WHERE id = $1 RETURNING *", operator_id
        )
        assert row is not None
        await store.revoke_sessions_of(conn, operator_id, "principal-gone")
        await store.audit(conn, admin, operator_id, "change", ["disabled_at"], body.reason)
    return _state(row)


@router.put("/operators/{operator_id}/roles", response_model=OperatorState)
async def change_operator_roles(
    operator_id: UUID,
    body: OperatorRolesIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("operators.roles")],
) -> OperatorState:
    """Admins set an operator's roles. Tokens carry roles, so the operator's sessions
    end at once: they log in again with the new ones. Audited. The last admin keeps the
    admin role. Roles as they are already change nothing (no row, no session ended)."""
    refuse_card_numbers(reason=body.reason)
    refuse_personal_data(reason=body.reason)
    admin = _operator_id(op)
    roles = sorted(set(body.roles))
    async with ctx.pool.acquire() as conn, conn.transaction():
        admins, operator = await _lock_operator_as_admin(conn, admin, operator_id)
        if sorted(operator["roles"]) == roles:
            return _state(operator)
        if ADMIN not in roles and not admins - {operator_id}:
            raise _last_admin()
        row = await conn.fetchrow(
            "UPDATE operators SET roles = $2 WHERE id = $1 RETURNING *", operator_id, roles
        )
        assert row is not None
        await store.revoke_sessions_of(conn, operator_id, "principal-gone")
        await store.audit(conn, admin, operator_id, "change", ["roles"], body.reason)
    return _state(row)


@router.post("/me/password", response_model=TokenPair)
@before_own_password
async def set_own_password(
    body: OperatorPasswordChange,
    ctx: Ctx,
    op: Annotated[Operator, Depends(any_operator)],
) -> TokenPair:
    """An operator sets their own password, with the current one (throttled like a
    login). The first thing an operator created by another does: until then their
    sessions may do nothing else (``403 password-change-required``), since whoever
    created the identity chose that password (P-15). Every session of the operator ends;
    a new one starts (the answer), with the operator's roles. Audited."""
    if body.new_password == body.current_password:
        raise Problem(
            422,
            "Password unchanged",
            "The new password must differ from the current one.",
            slug="password-unchanged",
        )
    operator_id = _operator_id(op)
    async with ctx.pool.acquire() as conn:
        operator = await store.active_operator(conn, operator_id)
    stored = operator["password_hash"] if operator is not None else None
    await reauthenticate(
        ctx,
        operator_id,
        stored,
        body.current_password,
        "The current password is wrong.",
        operator=True,
    )
    assert operator is not None  # reauthenticate refused no one
    assert stored is not None
    new_hash = await hash_password(body.new_password)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await store.set_own_password(conn, operator_id, UUID(op.sid), stored, new_hash):
            raise Problem(
                401,
                "Unauthorised",
                "The password or this session changed meanwhile: sign in again.",
                slug="unauthorised",
            )
        await store.revoke_sessions_of(conn, operator_id, "password-changed")
        purpose = (
            "own password changed"
            if has_own_password(operator)
            else "own password set, replacing the one chosen by the operator who created"
            " this identity"
        )
        await store.audit(conn, operator_id, operator_id, "change", ["password"], purpose)
        fresh = await store.active_operator(conn, operator_id)
        assert fresh is not None
        pair = await start_session(ctx, conn, fresh, "operator")
    return pair


# -- users' personal data --------------------------------------------------------------


async def _found(ctx: Context, user: store.Row) -> UserFound:
    uid = user["id"]
    return UserFound(
        id=uid,
        name=await ctx.vault.open(uid, user["name"], purpose=NAME),
        email=await ctx.vault.open(uid, user["email"], purpose=EMAIL),
        active=user["active"],
    )


class UserSearch(BaseModel):
    email: EmailStr
    purpose: str = Field(
        min_length=3, max_length=200, description="Why the data is needed (audited)."
    )


@router.post("/users/search", response_model=list[UserFound])
async def search_users(
    body: UserSearch, ctx: Ctx, op: Annotated[Operator, allowed("users.search")]
) -> list[UserFound]:
    """Find a user by exact email (blind index). A match is an audited read. A POST, so
    the address travels in the body: never in a URL, which browsers keep in their
    history and proxies in their logs."""
    purpose = body.purpose
    refuse_card_numbers(purpose=purpose)
    refuse_personal_data(purpose=purpose)
    index = ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await store.user_by_email_index(conn, index)
        if user is None:
            return []
        found = await _found(ctx, user)
        await store.audit(
            conn, _operator_id(op), user["id"], "read", ["id", "name", "email", "active"], purpose
        )
    return [found]


@router.get("/users/{user_id}", response_model=UserRecord)
async def read_user(
    user_id: UUID, purpose: Purpose, ctx: Ctx, op: Annotated[Operator, allowed("users.read")]
) -> UserRecord:
    """A user's personal data; the read and its stated purpose are audited together."""
    refuse_card_numbers(purpose=purpose)
    refuse_personal_data("query", purpose=purpose)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await store.user_by_id(conn, user_id)
        if user is None:
            raise not_found("user")
        devices = await store.devices_of(conn, user_id)
        requests = await store.requests_of(conn, user_id)
        found = await _found(ctx, user)
        record = UserRecord(
            **found.model_dump(),
            email_verified=user["email_verified"],
            age_band=user["age_band"],
            locale=user["locale"],
            created_at=user["created_at"],
            devices=[
                {
                    "id": str(d["id"]),
                    "damage_state": d["damage_state"],
                    "model": await ctx.vault.open(user_id, d["model"], purpose=DEVICE_MODEL),
                }
                for d in devices
            ],
            request_ids=[r["id"] for r in requests],
        )
        await store.audit(
            conn,
            _operator_id(op),
            user_id,
            "read",
            [
                "id",
                "name",
                "email",
                "active",
                "email_verified",
                "age_band",
                "locale",
                "created_at",
                "devices",
                "request_ids",
            ],
            purpose,
        )
    return record


@router.patch("/users/{user_id}", response_model=UserChanged, response_model_exclude_none=True)
async def change_user(
    user_id: UUID, body: UserChange, ctx: Ctx, op: Annotated[Operator, allowed("users.change")]
) -> UserChanged:
    """Change a user's data on their emailed request (P-24): the change and the audit row
    naming the request commit together or not at all. The answer holds only what changed
    (P-07: a name fixed on request is no reason to see the email). A new email is the
    account's at once, unverified until the link mailed to it is opened: an address
    mistyped from the request shows as unconfirmed instead of silently taking the
    account's mail. No password-reset link goes to it until the owner signs in under it
    with their password: the operator who typed it may hold its mailbox."""
    refuse_card_numbers(
        name=body.name,
        email=body.email,
        purpose=body.purpose,
        request_reference=body.request_reference,
    )
    refuse_personal_data(purpose=body.purpose, request_reference=body.request_reference)
    if body.name is None and body.email is None:
        raise Problem(422, "Nothing to change", "Give a name or an email.", slug="validation")
    # The user first: sealing for an unknown id would create a key for no one, and for an
    # erased user the vault refuses (its key is shredded).
    async with ctx.pool.acquire() as conn:
        user = await store.user_by_id(conn, user_id)
    if user is None:
        raise not_found("user")
    if body.email is not None and user["guardian_email"] is not None:
        # No endpoint changes a guardian: checked on this read, it stays checked.
        await _refuse_guardian_address(ctx, op, user, body)
    changes: dict[str, Any] = {}
    try:
        if body.name is not None:
            changes["name"] = await ctx.vault.seal(user_id, body.name, purpose=NAME)
        if body.email is not None:
            changes.update(
                email_index=ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX),
                email=await ctx.vault.seal(user_id, body.email, purpose=EMAIL),
                # The address is settled on request: a change waiting for its link is
                # dropped, and its link with it (it may be a hijacker's).
                **store.NO_PENDING_ADDRESS,
                **store.LOCK_LEFT_BEHIND,
                email_verified=False,
            )
    except SubjectShredded:  # erased since the check
        raise not_found("user") from None
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            user = await store.user_by_id(conn, user_id, lock=True)
            if user is None:
                raise not_found("user")
            if "email_index" in changes and await store.email_index_taken(
                conn, changes["email_index"], user_id
            ):
                raise _AddressTaken
            fields = sorted(f for f in ("name", "email") if f in changes)
            # A change waiting for its link is dropped with it: changed too, so the audit
            # row names it as the event does.
            dropped = ["pending_email"] if "email" in changes and user["pending_email"] else []
            await store.audit(
                conn, _operator_id(op), user_id, "change", sorted(fields + dropped),
                body.purpose, body.request_reference,
            )  # fmt: skip
            await store.update_user(conn, user_id, **changes)
            if "email_index" in changes:
                await store.revoke_address_links(conn, user_id, changes["email_index"])
                await store.revoke_password_resets(conn, user_id)
                # Whoever typed the address may hold its mailbox: no reset goes there
                # until the owner signs in under it (migration 024).
                await store.record_operator_address(conn, user_id, changes["email_index"])
            updated = ProfileUpdated(user_id=user_id, fields=tuple(sorted(fields + dropped)))
            await emit(conn, updated, user_id)
            fresh = await store.user_by_id(conn, user_id)
            assert fresh is not None
            await publish_card(conn, ctx.vault, fresh)
            if "email_index" in changes:  # to the new address, once the card holds it
                await mail_action_link(
                    ctx, conn, user_id, purpose="verify_email", template="verify_email",
                    path="verify-email", card_changed_at=fresh["updated_at"],
                    email_index=changes["email_index"],
                )  # fmt: skip
    except (_AddressTaken, asyncpg.UniqueViolationError):  # or confirmed elsewhere meanwhile
        index = changes.get("email_index")
        raise await _refuse_taken_address(ctx, op, user_id, body, index) from None
    # What was sealed above; the operator typed it, so showing it reads nothing new.
    return UserChanged(id=user_id, fields=fields, name=body.name, email=body.email)


async def _refuse_guardian_address(
    ctx: Context, op: Operator, user: store.Row, body: UserChange
) -> None:
    """422 if the new address is the child's guardian's (P-26: they would consent for
    themselves). The refusal tells the operator the guardian's address: a read of it,
    audited as ``_refuse_taken_address`` audits its own, never naming the address."""
    assert body.email is not None
    uid = user["id"]
    try:
        guardian = await ctx.vault.open(uid, user["guardian_email"], purpose=GUARDIAN_EMAIL)
    except SubjectShredded:  # erased since the read
        raise not_found("user") from None
    new_index = ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX)
    try:
        refuse_own_guardian(ctx.vault, new_index, guardian, "email")
    except Problem:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await store.audit(
                conn, _operator_id(op), uid, "read", ["guardian_email"],
                f"{REFUSED_GUARDIAN}; stated purpose: {body.purpose}", body.request_reference,
            )  # fmt: skip
        raise


REFUSED_GUARDIAN = "an email change refused: the address is the account's guardian's"


class _AddressTaken(Exception):
    """The address an operator gives is another account's: the change rolls back."""


async def _refuse_taken_address(
    ctx: Context, op: Operator, user_id: UUID, body: UserChange, index: bytes | None
) -> Problem:
    """The 409 for an address another account has, once its audit row is committed.

    The refusal tells the operator that the address has an account: a read of that
    account's data, as a search finding it is (P-07). So it is audited, in a transaction
    of its own (the change's rolled back), naming the owner, the request and the stated
    purpose, never the address. An owner erased meanwhile has nothing left to read.
    """
    async with ctx.pool.acquire() as conn, conn.transaction():
        owner = None if index is None else await store.user_by_email_index(conn, index)
        if owner is not None and owner["id"] != user_id:
            purpose = f"{REFUSED_ADDRESS}; stated purpose: {body.purpose}"
            await store.audit(
                conn, _operator_id(op), owner["id"], "read", ["email"], purpose,
                body.request_reference,
            )  # fmt: skip
    return Problem(
        409, "Email unavailable", "Another account uses this email.", slug="email-unavailable"
    )


REFUSED_ADDRESS = "an email change of another account refused: this account has the address"


# -- invoices (financial records) ------------------------------------------------------


@router.post(
    "/users/{user_id}/invoices", response_model=Invoice, status_code=status.HTTP_201_CREATED
)
async def record_invoice(
    user_id: UUID, body: InvoiceIn, ctx: Ctx, op: Annotated[Operator, allowed("invoices.record")]
) -> Invoice:
    """Record a repair invoice paid through the payment provider (never card data).

    The user sees it in their export; on erasure it is kept anonymised for the
    ``financial_records`` retention period (P-13). The audit row names no invoice, so
    the kept invoice cannot be traced back through it.
    """
    async with ctx.pool.acquire() as conn:
        if await store.user_by_id(conn, user_id) is None:
            raise not_found("user")
    try:
        columns = await new_invoice_columns(ctx.vault, user_id, body)
    except SubjectShredded:  # erased since the check: the vault seals nothing for them
        raise not_found("user") from None
    async with ctx.pool.acquire() as conn, conn.transaction():
        # Shared lock: an erasure of this user waits for the invoice, then sees it.
        if await conn.fetchval("SELECT 1 FROM users WHERE id = $1 FOR SHARE", user_id) is None:
            raise not_found("user")
        if not await store.insert_invoice(conn, **columns):
            raise Problem(
                409, "Invoice exists", "An invoice with this number exists.", slug="invoice-exists"
            )
        await store.audit(
            conn, _operator_id(op), user_id, "change", ["invoices"], "record a repair invoice"
        )
        row = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", columns["id"])
    assert row is not None
    return await invoice_out(ctx.vault, row)


# -- requests --------------------------------------------------------------------------


@router.get("/requests", response_model=list[RequestListed])
async def list_open_requests(
    ctx: Ctx,
    _: Annotated[Operator, allowed("requests.list")],
    state: Annotated[Literal["open", "answered"], Query(alias="status")] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RequestListed]:
    """Requests waiting for an answer: ids and categories only, not whose (so, not
    audited): who asked, and what, is read from one thread at a time, audited."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, category, status, created_at FROM requests WHERE status = $1"
            " ORDER BY created_at LIMIT $2",
            state,
            limit,
        )
    return [RequestListed(**dict(r)) for r in rows]


@router.get("/requests/{request_id}", response_model=OperatorThread)
async def read_request_thread(
    request_id: UUID,
    purpose: Purpose,
    ctx: Ctx,
    op: Annotated[Operator, allowed("requests.reply")],
) -> dict[str, Any]:
    """A request's thread (personal data: audited)."""
    refuse_card_numbers(purpose=purpose)
    refuse_personal_data("query", purpose=purpose)
    async with ctx.pool.acquire() as conn, conn.transaction():
        request = await conn.fetchrow("SELECT * FROM requests WHERE id = $1", request_id)
        if request is None:
            raise not_found("request")
        uid = request["user_id"]
        messages = await store.messages_of(conn, request_id)
        thread = [
            {
                "id": str(m["id"]),
                "author": m["author"],
                "created_at": m["created_at"].isoformat(),
                "text": await ctx.vault.open(uid, m["body"], purpose=MESSAGE_BODY),
            }
            for m in messages
        ]
        await store.audit(conn, _operator_id(op), uid, "read", ["requests.text"], purpose)
    return {
        "id": str(request_id),
        "user_id": str(uid),
        "category": request["category"],
        "status": request["status"],
        "messages": thread,
    }


@router.post(
    "/requests/{request_id}/replies", response_model=ReplyOut, status_code=status.HTTP_201_CREATED
)
async def reply_to_request(
    request_id: UUID,
    body: ReplyIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("requests.reply")],
    idempotency_key: IdempotencyKey,
) -> ReplyOut | JSONResponse:
    """Reply: the user gets an inbox item and an email from the notifier (P-05). With an
    ``Idempotency-Key``, sending it again replies (and mails) nothing twice."""
    refuse_card_numbers(text=body.text)
    reply_id = uuid4()
    async with ctx.pool.acquire() as conn:
        request = await conn.fetchrow("SELECT * FROM requests WHERE id = $1", request_id)
    if request is None:
        raise not_found("request")
    uid = request["user_id"]
    try:
        sealed = await ctx.vault.seal(uid, body.text, purpose=MESSAGE_BODY)
    except SubjectShredded:  # the user was erased meanwhile
        raise not_found("request") from None
    async with ctx.pool.acquire() as conn, conn.transaction():
        # Again, held: the user may have deleted the request since it was read.
        if (
            await conn.fetchval("SELECT 1 FROM requests WHERE id = $1 FOR UPDATE", request_id)
            is None
        ):
            raise not_found("request")
        key = await idempotency.claim(
            conn, _operator_id(op), idempotency_key,
            f"POST /operator/requests/{request_id}/replies", body,
        )  # fmt: skip
        if isinstance(key, idempotency.Replayed):
            return key.response()
        await store.add_message(conn, reply_id, request_id, "operator", sealed, _operator_id(op))
        await conn.execute("UPDATE requests SET status = 'answered' WHERE id = $1", request_id)
        await emit(conn, RequestReplied(user_id=uid, request_id=request_id, reply_id=reply_id), uid)
        replied = ReplyOut(reply_id=reply_id, request_id=request_id)
        await idempotency.answered(conn, key, status.HTTP_201_CREATED, replied)
    return replied


# -- aggregates and audit --------------------------------------------------------------


@router.get("/stats", response_model=Stats)
async def stats(ctx: Ctx, _: Annotated[Operator, allowed("stats.read")]) -> Stats:
    """Aggregates only: what analysts may see."""
    async with ctx.pool.acquire() as conn:
        users = await conn.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE active) AS active FROM users"
        )
        bands = await conn.fetch("SELECT age_band, count(*) AS n FROM users GROUP BY age_band")
        damage = await conn.fetch(
            "SELECT damage_state, count(*) AS n FROM devices GROUP BY damage_state"
        )
        open_requests = await conn.fetchval("SELECT count(*) FROM requests WHERE status = 'open'")
    assert users is not None
    return Stats(
        users=users["total"],
        active_users=users["active"],
        users_by_age_band={r["age_band"]: r["n"] for r in bands},
        devices_by_damage_state={r["damage_state"]: r["n"] for r in damage},
        open_requests=open_requests,
    )


NEXT_PAGE = {
    "Link": {
        "description": 'The next page, when there is one: `<?after_seq=...>; rel="next"`'
        " (relative to this request's address, with its filters and limit).",
        "schema": {"type": "string"},
    }
}
_BIGINT = 2**63 - 1


@router.get("/audit", response_model=list[AuditRow], responses={200: {"headers": NEXT_PAGE}})
async def read_audit(
    response: Response,
    ctx: Ctx,
    _: Annotated[Operator, allowed("audit.read")],
    subject_id: UUID | None = None,
    operator_id: UUID | None = None,
    after_seq: Annotated[
        int | None,
        Query(
            ge=0,
            le=_BIGINT,
            description="Only rows after this place in the chain: the chain_seq of the last"
            " row of the page before (keyset paging; the Link header names the next page).",
        ),
    ] = None,
    after_id: Annotated[
        int | None,
        Query(
            ge=0,
            le=_BIGINT,
            deprecated=True,
            description="Only rows after the row with this id in the chain (its chain_seq"
            " as after_seq): the last id of the page before, as links named it until they"
            " named after_seq. An id no row has is refused (422 invalid-cursor).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditRow]:
    """Who read or changed whose data, which fields and why (ids only), oldest first in
    the chain's order, a page at a time: while more rows follow, the Link header
    (``rel="next"``) names the next page (``after_seq``, the chain_seq of this one's
    last row).

    Paged on chain_seq, not id: an id is drawn before its row waits for the chain's lock
    (migration 005), so rows commit in chain order only, and a page read between two
    commits could end past the id of a row not yet committed, never to show it."""
    async with ctx.pool.acquire() as conn:
        after = await _audit_position(conn, after_seq, after_id)
        rows = await conn.fetch(
            "SELECT * FROM audit_log WHERE ($1::uuid IS NULL OR subject_id = $1)"
            " AND ($2::uuid IS NULL OR operator_id = $2) AND chain_seq > $3"
            " ORDER BY chain_seq LIMIT $4",
            subject_id,
            operator_id,
            after,
            limit + 1,  # one more: is there a next page?
        )
    if len(rows) > limit:
        rows = rows[:limit]
        query = {"subject_id": subject_id, "operator_id": operator_id}
        following = {k: str(v) for k, v in query.items() if v is not None}
        following.update(after_seq=str(rows[-1]["chain_seq"]), limit=str(limit))
        response.headers["Link"] = f'<?{urlencode(following)}>; rel="next"'
    return [
        AuditRow(**{**dict(r), "fields": list(r["fields"]), "chain": bytes(r["chain"]).hex()})
        for r in rows
    ]


async def _audit_position(conn: Connection, after_seq: int | None, after_id: int | None) -> int:
    """The chain_seq a page of the audit log starts after (0: from the first row)."""
    if not after_id:  # none, or 0: from the first row, as after_id=0 always meant
        if after_id == 0 and after_seq is not None:
            raise _invalid_cursor("Give after_seq or after_id, not both.")
        return after_seq or 0
    if after_seq is not None:
        raise _invalid_cursor("Give after_seq or after_id, not both.")
    # The row's place in the chain, not its id: rows with a lower id may follow it there.
    seq: int | None = await conn.fetchval("SELECT chain_seq FROM audit_log WHERE id = $1", after_id)
    if seq is None:
        raise _invalid_cursor("after_id names no row of the audit log: page with after_seq.")
    return seq


@router.get("/audit/verify", response_model=AuditChainOut)
async def verify_audit(ctx: Ctx, _: Annotated[Operator, allowed("audit.read")]) -> AuditChainOut:
    """Recompute the audit log's hash chain from its first row. Checking it against the
    links published on Kafka takes ``make audit-verify`` (what an owner of the table
    could not rewrite)."""
    async with ctx.pool.acquire() as conn:
        report = await audit_chain.verify(conn)
    return AuditChainOut(**asdict(report), intact=report.intact)


# -- policy, announcements, incidents --------------------------------------------------


def refuse_misleading_title(title: str, bodies: tuple[str, ...], *, security_notice: bool) -> None:
    """422 for a title the notifier's compliance gate would refuse as a subject (P-28):
    told now, not found later as an email dead-lettered for every user."""
    problems = email_subjects.subject_problems(
        title,
        security_notice=security_notice,
        body_says=lambda claim: email_subjects.body_makes(claim, "\n".join(bodies)),
    )
    if problems:
        raise Problem(
            422,
            "Misleading title",
            "This title would be an email subject our compliance rules refuse: "
            + "; ".join(problems)
            + ".",
            slug="misleading-title",
            errors=[{"location": "body.title", "message": p, "type": "misleading_subject"}
                    for p in problems],
        )  # fmt: skip


def refuse_foreign_links(ctx: Context, **fields: str) -> None:
    """422 for text the notifier's compliance gate would refuse for a link to a host not
    ours (P-21), any scheme or none ("x.com/offer", "www.x.net"): told now, not found
    later as an email dead-lettered for every user."""
    ours = frozenset(h.casefold() for h in ctx.settings.accounts_link_hosts)
    errors = [
        {"location": f"body.{name}", "message": f"links to {', '.join(foreign)}",
         "type": "foreign_link"}
        for name, text in fields.items()
        if (foreign := email_links.foreign_hosts(text, ours))
    ]  # fmt: skip
    if errors:
        raise Problem(
            422,
            "Link not ours",
            "Emails link only to our own sites: "
            + "; ".join(f"{e['location'].removeprefix('body.')} {e['message']}" for e in errors)
            + " (a link whose address cannot be read shows as ?). Link to our own sites"
            " only, or name the other site without writing its address.",
            slug="foreign-link",
            errors=errors,
        )


@router.post("/policy-versions", response_model=PolicyOut, status_code=status.HTTP_201_CREATED)
async def publish_policy(
    body: PolicyIn, ctx: Ctx, op: Annotated[Operator, allowed("policy.publish")]
) -> PolicyOut:
    """Publish a policy version: every user is told (notifier, P-23)."""
    # Stored in clear and published to every user: no card numbers (P-09).
    refuse_card_numbers(version=body.version, summary=body.summary)
    refuse_foreign_links(ctx, version=body.version, summary=body.summary)
    now = datetime.now(UTC)
    effective = body.effective_at or now
    if effective < now - POLICY_CLOCK_SKEW:
        # Users are told of a version before it binds them, never after (P-23).
        raise Problem(
            422, "Effective date passed", "A policy version takes effect now or later.",
            slug="validation",
        )  # fmt: skip
    async with ctx.pool.acquire() as conn, conn.transaction():
        # One publication at a time, so versions take effect in the order published.
        await conn.execute("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
        latest = await conn.fetchval("SELECT max(effective_at) FROM policy_versions")
        if latest is not None and effective < latest:
            raise Problem(
                409,
                "Out of order",
                f"The latest version takes effect at {latest.isoformat()}: a new one cannot"
                " take effect before it.",
                slug="policy-version-order",
            )
        created = await conn.execute(
            "INSERT INTO policy_versions (version, summary, effective_at, published_by)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            body.version,
            body.summary,
            effective,
            _operator_id(op),
        )
        if created != "INSERT 0 1":
            raise Problem(
                409,
                "Version exists",
                "This policy version was published already.",
                slug="policy-version-exists",
            )
        await emit(
            conn,
            PolicyVersionPublished(
                policy_version=body.version, summary=body.summary, effective_at=effective
            ),
            f"policy:{body.version}",
        )
    return PolicyOut(version=body.version, effective_at=effective)


POLICY_CLOCK_SKEW = timedelta(minutes=5)


@router.post("/announcements", response_model=Announced, status_code=status.HTTP_201_CREATED)
async def announce(
    body: AnnouncementIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("announcements.create")],
    idempotency_key: IdempotencyKey,
) -> Announced | JSONResponse:
    """Announce a service change to every user (P-06), now or at ``send_at``. With an
    ``Idempotency-Key``, sending it again announces nothing twice."""
    refuse_card_numbers(title=body.title, message=body.message)
    refuse_misleading_title(body.title, (body.message,), security_notice=False)
    refuse_foreign_links(ctx, title=body.title, message=body.message)
    announcement_id = uuid4()
    async with ctx.pool.acquire() as conn, conn.transaction():
        key = await idempotency.claim(
            conn, _operator_id(op), idempotency_key, "POST /operator/announcements", body
        )
        if isinstance(key, idempotency.Replayed):
            return key.response()
        await conn.execute(
            "INSERT INTO announcements (id, title, message, send_at, announced_by)"
            " VALUES ($1, $2, $3, $4, $5)",
            announcement_id,
            body.title,
            body.message,
            body.send_at,
            _operator_id(op),
        )
        notice_id = uuid4()
        await emit(
            conn,
            SendNotice(
                notice_id=notice_id,
                template="service_announcement",
                category="service_announcement",
                audience="all",
                params={
                    "announcement_id": str(announcement_id),
                    "title": body.title,
                    "message": body.message,
                },
                send_at=body.send_at,
            ),
            str(notice_id),
        )
        announced = Announced(id=announcement_id, notice_id=notice_id)
        await idempotency.answered(conn, key, status.HTTP_201_CREATED, announced)
    return announced


@router.post("/incidents", response_model=IncidentOut, status_code=status.HTTP_201_CREATED)
async def declare_incident(
    body: IncidentIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("incidents.declare")],
    idempotency_key: IdempotencyKey,
) -> IncidentOut | JSONResponse:
    """Declare a security incident; the notifier tells every affected user (P-17). With
    an ``Idempotency-Key``, sending it again declares nothing twice."""
    refuse_card_numbers(title=body.title, message=body.message)
    # The email's body holds the title and the message.
    refuse_misleading_title(body.title, (body.title, body.message), security_notice=True)
    refuse_foreign_links(ctx, title=body.title, message=body.message)
    if body.audience == "listed" and not body.user_ids:
        raise Problem(
            422, "No one listed", "List the affected users, or choose 'all'.", slug="validation"
        )
    incident_id = uuid4()
    user_ids = tuple(dict.fromkeys(body.user_ids)) if body.audience == "listed" else ()
    async with ctx.pool.acquire() as conn, conn.transaction():
        key = await idempotency.claim(
            conn, _operator_id(op), idempotency_key, "POST /operator/incidents", body
        )
        if isinstance(key, idempotency.Replayed):
            return key.response()
        affected = len(user_ids) or int(
            await conn.fetchval("SELECT count(*) FROM users WHERE active")
        )
        await conn.execute(
            "INSERT INTO incidents (id, title, message, audience, affected, declared_by)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            incident_id,
            body.title,
            body.message,
            body.audience,
            affected,
            _operator_id(op),
        )
        await emit(
            conn,
            IncidentDeclared(
                incident_id=incident_id,
                title=body.title,
                message=body.message,
                audience=body.audience,
                user_ids=user_ids,
            ),
            str(incident_id),
        )
        declared = IncidentOut(id=incident_id, affected=affected)
        await idempotency.answered(conn, key, status.HTTP_201_CREATED, declared)
    return declared


# -- third parties ---------------------------------------------------------------------


@router.post("/recipients", response_model=RecipientOut, status_code=status.HTTP_201_CREATED)
async def register_recipient(
    body: RecipientIn, ctx: Ctx, op: Annotated[Operator, allowed("recipients.register")]
) -> RecipientOut:
    """Register a processor or partner with its purpose and the fields it may receive.
    A processor may never be registered for a sensitive field (P-19). Every record it
    receives names its user (``user_id``, added to the fields if not given): erasures
    forwarded to it name the user by that id alone."""
    # Stored in clear, shown to users and written into the purpose of every disclosure's
    # audit row (kept for good): no card numbers, no one's personal data.
    refuse_card_numbers(name=body.name, purpose=body.purpose)
    refuse_personal_data(name=body.name, purpose=body.purpose)
    unknown = field_rules.unknown_positions(body.allowed_fields)
    if unknown:
        # By position: an unknown entry is the caller's text, and answers never echo it.
        raise Problem(
            422,
            "Unknown fields",
            "No such fields at these positions of allowed_fields (from 0): "
            + ", ".join(str(i) for i in unknown)
            + ".",
            slug="validation",
            errors=[
                {"location": f"body.allowed_fields.{i}", "message": "no such field",
                 "type": "unknown_field"}
                for i in unknown
            ],
        )  # fmt: skip
    refused = field_rules.refused_for(body.kind, body.allowed_fields)
    if refused:
        raise Problem(
            422,
            "Sensitive fields refused",
            f"A processor never receives sensitive fields: {', '.join(refused)}.",
            slug="sensitive-field",
        )
    recipient_id = uuid4()
    fields = field_rules.with_user_id(body.allowed_fields)  # what every record holds
    async with ctx.pool.acquire() as conn:
        created = await conn.execute(
            "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            recipient_id,
            body.name,
            body.kind,
            body.purpose,
            fields,
            _operator_id(op),
        )
    if created != "INSERT 0 1":
        raise Problem(
            409, "Recipient exists", "This recipient and purpose exist.", slug="recipient-exists"
        )
    return RecipientOut(
        id=recipient_id, name=body.name, kind=body.kind, purpose=body.purpose, allowed_fields=fields
    )


async def _disclosable_record(
    ctx: Context, user: store.Row, devices: Sequence[store.Row]
) -> dict[str, Any]:
    uid = user["id"]
    return {
        "user_id": str(uid),
        "email": await ctx.vault.open(uid, user["email"], purpose=EMAIL),
        "name": await ctx.vault.open(uid, user["name"], purpose=NAME),
        "locale": user["locale"],
        "age_band": user["age_band"],
        "device_models": [
            await ctx.vault.open(uid, d["model"], purpose=DEVICE_MODEL) for d in devices
        ],
        "device_damage_states": [d["damage_state"] for d in devices],
    }


EXPORT_PAGE = 500
EXPORT_PAGE_MAX = 1000
# A page asked for again is answered whole without being logged again only as a retry
# of an answer lost on the way: its disclosure, logged when it was first answered, then
# covers it. Later, its users' current data would go out with no disclosure of its own.
EXPORT_RETRY = timedelta(minutes=10)
# A cursor: the export's id and the last user of the page before, 32 bytes in base64url.
_CURSOR = r"^[A-Za-z0-9_-]{43}$"

EXPORT_NEXT_PAGE = {
    "Link": {
        "description": "The next page of this export, while more users follow: `<?after=..."
        '&limit=...>; rel="next"` (relative to this request\'s address).',
        "schema": {"type": "string"},
    }
}


def export_cursor(export_id: UUID, last_user: UUID) -> str:
    """The cursor of the page after ``last_user`` in the export ``export_id``."""
    return base64.urlsafe_b64encode(export_id.bytes + last_user.bytes).rstrip(b"=").decode()


def _invalid_cursor(detail: str) -> Problem:
    return Problem(422, "Invalid cursor", detail, slug="invalid-cursor")


def read_export_cursor(cursor: str) -> tuple[UUID, UUID]:
    """The export and the last user of the page before, from an ``export_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _invalid_cursor("after is not a cursor of an export.") from None
    if len(raw) != 32:
        raise _invalid_cursor("after is not a cursor of an export.")
    return UUID(bytes=raw[:16]), UUID(bytes=raw[16:])


async def _claim_export(
    conn: Connection, export_id: UUID, recipient_id: UUID, operator_id: UUID
) -> None:
    """Hold the export ``export_id`` as this operator's, to this recipient, until the
    page's transaction ends (migration 025): 422 if it is another's.

    Call first in the page's transaction. A cursor can be made by hand, so two first
    pages may name one unused id at once: the second waits on the first's row, then
    finds its owner. Checked outside the transaction, both would pass, and the shared
    users' disclosures of one would go unlogged and unaudited (logged once per export).
    """
    await conn.execute(
        "INSERT INTO exports (id, recipient_id, operator_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO NOTHING",
        export_id,
        recipient_id,
        operator_id,
    )
    owner = await conn.fetchrow(
        "SELECT recipient_id, operator_id FROM exports WHERE id = $1 FOR UPDATE", export_id
    )
    assert owner is not None  # claimed above, or by a page committed since
    # An export begun before migration 025 has its owner in its disclosures only.
    logged = await conn.fetchrow(
        "SELECT recipient_id, operator_id FROM disclosures WHERE export_id = $1 LIMIT 1",
        export_id,
    )
    if any(
        row is not None and (row["recipient_id"], row["operator_id"]) != (recipient_id, operator_id)
        for row in (owner, logged)
    ):
        raise _invalid_cursor(
            "This cursor continues an export to another recipient, or by another operator."
        )


async def _still_a_retry(conn: Connection, export_id: UUID, page: Sequence[UUID]) -> None:
    """410 when the export disclosed one of ``page``'s users longer than
    ``EXPORT_RETRY`` ago: the page is no retry but a new read (a new export logs it)."""
    expired = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM disclosures WHERE export_id = $1"
        " AND user_id = ANY($2::uuid[]) AND at < now() - $3::interval)",
        export_id,
        list(page),
        EXPORT_RETRY,
    )
    if expired:
        minutes = int(EXPORT_RETRY.total_seconds() // 60)
        raise Problem(
            410,
            "Export page expired",
            f"This page was exported more than {minutes} minutes ago; a page is answered"
            " again only as a retry. Start a new export: it logs its disclosures.",
            slug="export-page-expired",
        )


async def _export_page(
    ctx: Context,
    conn: Connection,
    recipient_id: UUID,
    export_id: UUID,
    operator_id: UUID,
    page: Sequence[UUID],
) -> list[dict[str, Any]]:
    """Disclose the consenting users of ``page`` in one transaction; their records.

    The audit rows are written last: the first takes the audit chain's lock, which every
    audited read and change of any operator waits for, and holds it until the commit.
    """
    async with conn.transaction():
        await _claim_export(conn, export_id, recipient_id, operator_id)
        await _still_a_retry(conn, export_id, page)  # once the export is known to be ours
        recipient = await conn.fetchrow("SELECT * FROM recipients WHERE id = $1", recipient_id)
        if recipient is None:
            raise not_found("recipient")
        # Held, then read again: a consent withdrawn while this page is exported either
        # came first (and is seen now) or waits for this page's commit, then forwards it.
        held = await conn.fetch(
            "SELECT id FROM users WHERE id = ANY($1::uuid[]) ORDER BY id FOR SHARE", page
        )
        consenting = await store.consenting_users(
            conn, recipient_id, recipient["purpose"], among=[r["id"] for r in held]
        )
        users = await store.users_by_ids(conn, consenting)
        devices = await store.devices_of_users(conn, consenting)
        records: dict[UUID, dict[str, Any]] = {}
        by_fields: dict[tuple[str, ...], list[UUID]] = {}
        for uid in consenting:
            full = await _disclosable_record(ctx, users[uid], devices.get(uid, []))
            record = field_rules.disclosed(recipient["kind"], recipient["allowed_fields"], full)
            records[uid] = record
            by_fields.setdefault(tuple(sorted(record)), []).append(uid)
        # Logged once per user in an export: a page asked for again logs no one twice.
        logged = {
            fields: await store.log_disclosures(
                conn, export_id, recipient_id, operator_id, uids, fields
            )
            for fields, uids in by_fields.items()
        }
        why = f"export to {recipient['name']} for {recipient['purpose']}"
        for fields, uids in logged.items():
            await store.audit_each(conn, operator_id, uids, "disclose", fields, why)
    # A page asked for again (its answer lost on the way) comes whole: its users are
    # logged and audited once in the export, as they went to the same recipient.
    return [records[uid] for uid in consenting]


@router.post(
    "/recipients/{recipient_id}/exports",
    response_model=Export,
    responses={200: {"headers": EXPORT_NEXT_PAGE}},
)
async def export_to_recipient(
    recipient_id: UUID,
    response: Response,
    ctx: Ctx,
    op: Annotated[Operator, allowed("recipients.export")],
    after: Annotated[
        str | None,
        Query(
            pattern=_CURSOR,
            description="The cursor of the page to export (`next` of the page before, or"
            " the Link header's): without it, a new export starts at its first page.",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=EXPORT_PAGE_MAX, description="Users a page holds at most.")
    ] = EXPORT_PAGE,
) -> Export:
    """The records a recipient receives: only consenting users (P-18), only allowed and,
    for a processor, non-sensitive fields (P-19); every disclosure logged and audited.

    A page at a time (keyset paging on the user id), each page in a transaction of its
    own, so no export holds the audit chain's lock, nor its users' rows, for longer than
    one page: while more users follow, ``next`` (and the Link header, ``rel="next"``)
    names the next page of the same export. A user is disclosed, logged and audited once
    per export: a page asked for again (a retry) is answered whole, logging no one twice,
    within ``EXPORT_RETRY`` of its first answer, and refused after (410)."""
    operator_id = _operator_id(op)
    export_id, last = (uuid4(), None) if after is None else read_export_cursor(after)
    async with ctx.pool.acquire() as conn:
        recipient = await conn.fetchrow("SELECT * FROM recipients WHERE id = $1", recipient_id)
        if recipient is None:
            raise not_found("recipient")
        # Unlocked: the page's users, then one more to tell whether another page follows.
        candidates = await store.consenting_users(
            conn, recipient_id, recipient["purpose"], after=last, limit=limit + 1
        )
        page = candidates[:limit]
        # Their keys in one round trip, before the page's transaction holds anything.
        await ctx.vault.prefetch(page)
        records = await _export_page(ctx, conn, recipient_id, export_id, operator_id, page)
    following = None
    if len(candidates) > limit:
        following = export_cursor(export_id, page[-1])
        link = urlencode({"after": following, "limit": str(limit)})
        response.headers["Link"] = f'<?{link}>; rel="next"'
    return Export(
        export_id=export_id,
        recipient_id=recipient_id,
        purpose=recipient["purpose"],
        records=records,
        next=following,
    )


# -- operator-initiated deletion -------------------------------------------------------


async def _reauthenticate(ctx: Context, op: Operator, password: str) -> None:
    """403 unless ``password`` is the calling operator's (429 while throttled), the
    operator is not disabled (a disabled one has no password that passes) and set their
    own password (``403 password-change-required``): one whose password their creator
    chose may be that creator (P-15)."""
    async with ctx.pool.acquire() as conn:
        operator = await store.active_operator(conn, _operator_id(op))
    stored = operator["password_hash"] if operator is not None else None
    await reauthenticate(
        ctx, _operator_id(op), stored, password, "Your password is wrong.", operator=True
    )
    assert operator is not None  # reauthenticate refused a missing one
    if not has_own_password(operator):
        raise password_change_required()


def _four_eyes(detail: str) -> Problem:
    return Problem(403, "Second operator needed", detail, slug="four-eyes")


def _deletion(row: store.Row) -> OperatorDeletion:
    return OperatorDeletion(**{k: row[k] for k in OperatorDeletion.model_fields})


# What the audit rows of a request's making, withdrawal and rejection name as changed.
DELETION_REQUEST = ("deletion_request",)


@router.post(
    "/users/{user_id}/deletion-requests",
    response_model=OperatorDeletion,
    status_code=status.HTTP_202_ACCEPTED,
)
async def request_user_deletion(
    user_id: UUID,
    body: OperatorDeletionIn,
    ctx: Ctx,
    op: Annotated[Operator, allowed("deletions.request")],
) -> OperatorDeletion:
    """An operator asks to delete a user, with their password: nothing happens until a
    second, different operator approves (P-15). One request awaits approval per user at
    a time (``409 deletion-request-pending``); one not approved within
    ``IMT_ACCOUNTS_OPERATOR_DELETION_APPROVAL_DAYS`` expires, and may be made again."""
    refuse_card_numbers(reason=body.reason)
    # Stored in clear with the request, which an erasure keeps (its reason cleared) and a
    # restored snapshot holds as it was: it must name no one.
    refuse_personal_data(reason=body.reason)
    await _reauthenticate(ctx, op, body.password)
    days = ctx.settings.accounts_operator_deletion_approval_days
    async with ctx.pool.acquire() as conn, conn.transaction():
        if await store.user_by_id(conn, user_id) is None:
            raise not_found("user")
        await conn.execute(
            "UPDATE deletion_requests SET status = 'expired', updated_at = now()"
            " WHERE user_id = $1 AND status = 'pending_approval'"
            " AND created_at <= now() - make_interval(days => $2)",
            user_id,
            days,
        )
        row = await conn.fetchrow(
            "INSERT INTO deletion_requests (id, user_id, initiated_by, requested_by, reason,"
            " status) VALUES ($1, $2, 'operator', $3, $4, 'pending_approval')"
            " ON CONFLICT (user_id) WHERE status = 'pending_approval' DO NOTHING RETURNING *",
            uuid4(),
            user_id,
            _operator_id(op),
            body.reason,
        )
        if row is None:
            pending = await conn.fetchval(
                "SELECT id FROM deletion_requests WHERE user_id = $1"
                " AND status = 'pending_approval'",
                user_id,
            )
            raise Problem(
                409,
                "Deletion awaiting approval",
                f"A request to delete this user awaits a second operator's approval already"
                f" (request {pending}): approve it, reject it or withdraw it.",
                slug="deletion-request-pending",
            )
        # In the chain, kept for good: requested_by is outside it (the table's owner may
        # edit it) and goes with the disclosure log's release. Not the reason: free text
        # about the user, cleared at the erasure.
        purpose = f"operator deletion, request {row['id']} requested"
        await store.audit(conn, row["requested_by"], user_id, "change", DELETION_REQUEST, purpose)
    return _deletion(row)


@router.post("/deletion-requests/{request_id}/approve", response_model=OperatorDeletion)
async def approve_user_deletion(
    request_id: UUID,
    body: OperatorReauthentication,
    ctx: Ctx,
    op: Annotated[Operator, allowed("deletions.approve")],
) -> OperatorDeletion:
    """The second operator approves, with their password; only then is the deletion
    requested. Both operators must have set their own passwords. A request older than
    ``IMT_ACCOUNTS_OPERATOR_DELETION_APPROVAL_DAYS`` is expired instead (``410
    deletion-request-expired``): the deletion may be requested again."""
    await _reauthenticate(ctx, op, body.password)
    approver = _operator_id(op)
    days = ctx.settings.accounts_operator_deletion_approval_days
    async with ctx.pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval(
            "SELECT user_id FROM deletion_requests WHERE id = $1", request_id
        )
        # The user's row first, as everywhere a user's deletion is started or erased.
        under_way = None if user_id is None else await cancel_window.active_request(conn, user_id)
        row = await conn.fetchrow(
            "SELECT *, created_at <= now() - make_interval(days => $2) AS expired"
            " FROM deletion_requests WHERE id = $1 AND status = 'pending_approval' FOR UPDATE",
            request_id,
            days,
        )
        if row is None:
            raise not_found("deletion request awaiting approval")
        if row["expired"]:
            await conn.execute(
                "UPDATE deletion_requests SET status = 'expired', updated_at = now() WHERE id = $1",
                request_id,
            )
        else:
            approved = await _approve(ctx, conn, row, approver, under_way)
    if row["expired"]:  # answered once committed: the deletion may be requested again
        raise Problem(
            410,
            "Deletion request expired",
            f"This request was not approved within {days} days: it has expired. Request"
            " the deletion again if it is still wanted.",
            slug="deletion-request-expired",
        )
    return approved


async def _approve(
    ctx: Context,
    conn: Connection,
    row: store.Row,
    approver: UUID,
    under_way: store.Row | None,
) -> OperatorDeletion:
    """Approve the pending request ``row`` (locked, not expired) as ``approver``."""
    request_id, requester = row["id"], row["requested_by"]
    if requester == approver:
        raise _four_eyes("Another operator must approve a deletion you requested.")
    # Whoever created an identity chose its first password and may act as it, even once
    # "its owner" set another: an admin could make a support identity and an officer,
    # log in as each, then request as one and approve as the other. So the two lines of
    # creators (each identity, its creator, the creator's creator...) may not meet.
    requester_line = {requester} | await store.operator_creators(conn, requester)
    approver_line = {approver} | await store.operator_creators(conn, approver)
    if requester_line & approver_line:
        raise _four_eyes(
            "An operator with no creator in common with the one who requested this"
            " deletion must approve it (neither created the other, nor did anyone create"
            " both): an operator of another first admin's line."
        )
    await _refuse_unfit_requester(conn, requester)
    if under_way is not None:
        raise Problem(
            409,
            "Deletion under way",
            f"This user's deletion is under way already (request {under_way['id']}).",
            slug="deletion-under-way",
        )
    # An erasure leaves a request never approved as it was (the proof of it): there
    # is no account left for it to delete.
    if await store.user_by_id(conn, row["user_id"]) is None:
        raise Problem(
            409, "Account erased", "This user's account is erased already.",
            slug="account-erased",
        )  # fmt: skip
    approved = await conn.fetchrow(
        "UPDATE deletion_requests SET status = 'requested', approved_by = $2,"
        " updated_at = now() WHERE id = $1 RETURNING *",
        request_id,
        approver,
    )
    assert approved is not None
    uid = approved["user_id"]
    # The reason is free text about the user, cleared at the erasure; the audit log
    # keeps its rows for good, so it names the request and both operators (the
    # approver's row, the requester here), never repeats the reason.
    purpose = f"operator deletion, request {request_id}, requested by operator {requester}"
    await store.audit(conn, approver, uid, "delete", ["account"], purpose)
    await emit(
        conn,
        DeletionRequested(user_id=uid, request_id=request_id, initiated_by="operator"),
        uid,
    )
    await cancel_window.notify_deletion_requested(ctx, conn, uid, request_id)
    return _deletion(approved)


async def _refuse_unfit_requester(conn: Connection, requester: UUID) -> None:
    """403 or 409 unless the operator who requested a deletion may still have made it:
    their own password set, not disabled, still holding a role that may request one.
    Their row is held till the approval commits: a disabling or a role change then waits
    for it, or came first and is seen."""
    requested_by = await conn.fetchrow("SELECT * FROM operators WHERE id = $1 FOR SHARE", requester)
    # Nor anyone else's request made under a password its creator chose (one made before
    # operators set their own): the creator may have made it, alone.
    if requested_by is None or not has_own_password(requested_by):
        raise _four_eyes(
            "This deletion was requested by an operator who had not set their own password:"
            " reject it, and have it requested again."
        )
    if requested_by["disabled_at"] is not None:
        raise Problem(
            409,
            "Requester disabled",
            "The operator who requested this deletion is disabled since: reject it, and"
            " have it requested again if it is still wanted.",
            slug="requester-disabled",
        )
    # A role taken away takes the requests made with it: the second pair of eyes
    # approves a request someone entitled to make it stands behind now (P-15).
    if not set(requested_by["roles"]) & set(PERMISSIONS["deletions.request"]):
        raise Problem(
            409,
            "Requester no longer entitled",
            "The operator who requested this deletion no longer holds a role that may"
            " request one: reject it, and have it requested again if it is still wanted.",
            slug="requester-not-entitled",
        )


async def _close_pending(
    ctx: Context, caller: UUID, request_id: UUID, body: DeletionClosing, status: str
) -> OperatorDeletion:
    """Withdraw (its requester) or reject (another operator) a request awaiting
    approval: it can then never be approved. Audited, naming the request."""
    refuse_card_numbers(reason=body.reason)
    refuse_personal_data(reason=body.reason)  # kept for good in the audit log
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM deletion_requests WHERE id = $1 AND status = 'pending_approval'"
            " FOR UPDATE",
            request_id,
        )
        if row is None:
            raise not_found("deletion request awaiting approval")
        own = row["requested_by"] == caller
        if status == "withdrawn" and not own:
            raise Problem(
                403,
                "Not your request",
                "Only the operator who requested this deletion can withdraw it; a privacy"
                " officer or an admin can reject it.",
                slug="not-requester",
            )
        if status == "rejected" and own:
            raise Problem(
                403,
                "Your own request",
                "Withdraw a deletion you requested; another operator rejects one.",
                slug="own-request",
            )
        closed = await conn.fetchrow(
            "UPDATE deletion_requests SET status = $2, updated_at = now() WHERE id = $1"
            " RETURNING *",
            request_id,
            status,
        )
        assert closed is not None
        purpose = f"operator deletion, request {request_id} {status}: {body.reason}"
        await store.audit(conn, caller, closed["user_id"], "change", DELETION_REQUEST, purpose)
    return _deletion(closed)


@router.post("/deletion-requests/{request_id}/withdraw", response_model=OperatorDeletion)
async def withdraw_user_deletion(
    request_id: UUID,
    body: DeletionClosing,
    ctx: Ctx,
    op: Annotated[Operator, allowed("deletions.withdraw")],
) -> OperatorDeletion:
    """The operator who requested a deletion withdraws it while it awaits approval."""
    return await _close_pending(ctx, _operator_id(op), request_id, body, "withdrawn")


@router.post("/deletion-requests/{request_id}/reject", response_model=OperatorDeletion)
async def reject_user_deletion(
    request_id: UUID,
    body: DeletionClosing,
    ctx: Ctx,
    op: Annotated[Operator, allowed("deletions.reject")],
) -> OperatorDeletion:
    """A privacy officer or an admin other than its requester rejects a deletion awaiting
    approval (no password needed: a rejection deletes nothing)."""
    return await _close_pending(ctx, _operator_id(op), request_id, body, "rejected")
