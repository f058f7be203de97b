"""A user's own data: profile, preferences, devices, content, requests, consents,
policy, export and deletion. Every object is looked up with the caller's id, so one
user can never reach another's (404, never 403: existence is not revealed)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, EmailStr, Field

from services.accounts import cancel_window, store
from services.accounts.cards import card_of, publish_card
from services.accounts.context import (
    BIRTH_DATE,
    DEVICE_MODEL,
    EMAIL,
    EMAIL_INDEX,
    GUARDIAN_EMAIL,
    MESSAGE_BODY,
    NAME,
    PENDING_EMAIL,
    SOURCE,
    Context,
    Ctx,
    context_of,
    emit,
    not_found,
    refuse_card_numbers,
    refuse_own_guardian,
)
from services.accounts.domain.content import content_for
from services.accounts.invoices import Invoice, invoice_out
from services.accounts.links import link_invalid, link_used, mail_action_link
from services.accounts.recipients import forward_to_recipients
from services.accounts.security import MAX_PASSWORD, secret_hash
from services.accounts.sessions import access_for, session_user
from services.accounts.throttling import (
    count_address_change,
    reauthenticate,
    still_reauthenticated,
)
from shared.auth import CurrentUser
from shared.bus.outbox import outbox_arrays
from shared.db.pool import Connection
from shared.events.catalogue.accounts import (
    ConsentChanged,
    DamageState,
    DeletionRequested,
    DeviceChanged,
    PolicyAccepted,
    PreferencesChanged,
    ProfileUpdated,
    RequestSubmitted,
)
from shared.observability import Problem
from shared.service import idempotency
from shared.service.idempotency import IdempotencyKey

router = APIRouter(tags=["me"])

RequestCategory = Literal["repair", "feedback", "privacy", "other"]


class Preferences(BaseModel):
    marketing_email: bool
    personalisation: bool
    tracking_opt_out: bool


class PreferencesSaved(Preferences):
    access_token: str | None = Field(
        None,
        description="When the tracking choice changed: a new access token of this session"
        " carrying it. Use it from now on: the analytics collector reads the choice from"
        " the token, and the one sent with this request says the old one until it expires.",
    )


class Profile(BaseModel):
    id: UUID
    name: str
    email: str
    email_verified: bool
    pending_email: str | None = Field(
        None, description="A new address waiting for the link mailed to it to confirm it."
    )
    pending_email_until: datetime | None = Field(
        None, description="When that link expires; the new address is then forgotten."
    )
    age_band: str
    birth_date: str | None
    guardian_email: str | None
    active: bool
    locale: str
    preferences: Preferences
    created_at: datetime


class ProfileChange(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    email: EmailStr | None = None
    locale: Literal["en", "fr", "de", "es", "it", "pt", "nl"] | None = None
    current_password: str | None = Field(
        None,
        max_length=MAX_PASSWORD,
        description="Required with a new email: the address is how an account is recovered.",
    )


class DeviceIn(BaseModel):
    model: str = Field(min_length=1, max_length=100)
    damage_state: DamageState


class DeviceChange(BaseModel):
    model: str | None = Field(None, min_length=1, max_length=100)
    damage_state: DamageState | None = None


class Device(BaseModel):
    id: UUID
    model: str
    damage_state: str
    created_at: datetime
    updated_at: datetime


class ContentItem(BaseModel):
    id: str
    title: str
    body: str


class Content(BaseModel):
    personalised: bool
    items: list[ContentItem]


class RequestIn(BaseModel):
    category: RequestCategory
    text: str = Field(min_length=1, max_length=5000)


class MessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=5000)


class Message(BaseModel):
    id: UUID
    author: str
    text: str
    created_at: datetime


class RequestSummary(BaseModel):
    id: UUID
    category: str
    status: str
    created_at: datetime


class RequestThread(RequestSummary):
    messages: list[Message]


class ConsentIn(BaseModel):
    granted: bool


class Consent(BaseModel):
    recipient_id: UUID
    purpose: str
    granted: bool
    at: datetime


class ConsentHistory(BaseModel):
    current: list[Consent]
    history: list[Consent]


class Recipient(BaseModel):
    id: UUID
    name: str
    kind: str
    purpose: str
    allowed_fields: list[str]


class Reauthentication(BaseModel):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class DeletionRequest(BaseModel):
    id: UUID
    status: str = Field(
        description="requested (cancellable during the grace period), confirmed (the grace"
        " period ended: no longer cancellable), erased, or cancelled. The erasure's own"
        " stages are at GET /api/deletion/me/requests. (An export also lists an operator's"
        " requests never approved by a second operator: pending_approval, withdrawn,"
        " rejected or expired.)"
    )
    initiated_by: str
    created_at: datetime
    updated_at: datetime


class PolicyVersion(BaseModel):
    version: str
    summary: str
    effective_at: datetime
    published_at: datetime


class PolicyAcceptanceIn(BaseModel):
    version: str = Field(min_length=1, max_length=40)


class PolicyAcceptance(BaseModel):
    version: str
    accepted_at: datetime


# -- profile ---------------------------------------------------------------------------


async def _profile(ctx: Context, user: store.UserRow) -> Profile:
    vault, uid = ctx.vault, user["id"]
    return Profile(
        id=uid,
        name=await vault.open(uid, user["name"], purpose=NAME),
        email=await vault.open(uid, user["email"], purpose=EMAIL),
        email_verified=user["email_verified"],
        pending_email=(
            await vault.open(uid, user["pending_email"], purpose=PENDING_EMAIL)
            if user["pending_email"]
            else None
        ),
        pending_email_until=user["pending_email_until"],
        age_band=user["age_band"],
        birth_date=(
            await vault.open(uid, user["birth_date"], purpose=BIRTH_DATE)
            if user["birth_date"]
            else None
        ),
        guardian_email=(
            await vault.open(uid, user["guardian_email"], purpose=GUARDIAN_EMAIL)
            if user["guardian_email"]
            else None
        ),
        active=user["active"],
        locale=user["locale"],
        preferences=Preferences(
            marketing_email=user["marketing_email"],
            personalisation=user["personalisation"],
            tracking_opt_out=user["tracking_opt_out"],
        ),
        created_at=user["created_at"],
    )


async def _me(
    ctx: Context, conn: Connection, claims: CurrentUser, *, lock: bool = False
) -> store.Row:
    user = await store.user_by_id(conn, UUID(claims.sub), lock=lock)
    if user is None:
        raise Problem(401, "Unauthorised", "This account no longer exists.", slug="unauthorised")
    return user


@router.get("/me", response_model=Profile)
async def read_profile(claims: CurrentUser, request: Request) -> Profile:
    """Everything in the profile, opened from the vault."""
    # The hottest route takes the context from the request rather than through ``Ctx``:
    # each dependency costs FastAPI tens of microseconds per request. And the session
    # check of this request already read the row: one round trip, not two.
    ctx, user = context_of(request), session_user(request)
    if user is None:
        raise Problem(401, "Unauthorised", "This account no longer exists.", slug="unauthorised")
    return await _profile(ctx, user)


@router.patch("/me", response_model=Profile)
async def edit_profile(
    body: ProfileChange, claims: CurrentUser, ctx: Ctx, request: Request
) -> Profile:
    """Edit name, email or locale. A new email needs the current password (whoever holds
    the address can reset the password) and takes effect only once a link mailed to it
    confirms it: until then it waits as ``pending_email``. The answer is the same whether
    or not another account has that address; only the link's holder, who controls the
    mailbox, learns it. Asking for the current address withdraws a pending change."""
    refuse_card_numbers(name=body.name, email=body.email)
    uid = UUID(claims.sub)
    vault = ctx.vault
    checked: str | None = None  # the password hash a new address was allowed with
    if body.email is not None:
        checked = await _reauthenticate_for_email(ctx, uid, body.current_password)
    if body.email is None and (body.name is not None or body.locale is not None):
        quick = await _edit_name_or_locale(ctx, body, session_user(request))
        if quick is not None:
            return quick
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = await vault.seal(uid, body.name, purpose=NAME)
    if body.locale is not None:
        changes["locale"] = body.locale
    if body.email is not None:
        link_hours = timedelta(hours=ctx.settings.accounts_link_hours)
        changes.update(
            pending_email=await vault.seal(uid, body.email, purpose=PENDING_EMAIL),
            pending_email_index=vault.blind_index(body.email, purpose=EMAIL_INDEX),
            pending_email_until=datetime.now(UTC) + link_hours,  # as long as its link
            pending_change=uuid4(),
        )
    user = await _apply_profile_change(ctx, claims, uid, changes, checked)
    return await _profile(ctx, user)


async def _apply_profile_change(
    ctx: Context, claims: CurrentUser, uid: UUID, changes: dict[str, Any], checked: str | None
) -> store.Row:
    vault = ctx.vault
    async with ctx.pool.acquire() as conn, conn.transaction():
        new_address = changes.get("pending_email_index")
        if new_address is not None:
            await still_reauthenticated(conn, uid, UUID(claims.sid), checked)
            current = await _me(ctx, conn, claims, lock=True)
            # Only the link of this change may confirm an address from now on.
            await store.revoke_address_links(conn, uid, current["email_index"])
            if new_address == current["email_index"]:
                changes.update(store.NO_PENDING_ADDRESS)  # withdrawn
                new_address = None
            else:
                if current["guardian_email"] is not None:
                    # Not the guardian's: the sign-up refuses that, and a change must not
                    # reach it either (a child consenting for themselves, P-26).
                    guardian = await vault.open(
                        uid, current["guardian_email"], purpose=GUARDIAN_EMAIL
                    )
                    refuse_own_guardian(vault, new_address, guardian, "email")
                await count_address_change(conn, vault, uid)  # 429 past the day's quota
        # The update locks the row and answers it as changed: one round trip, not three.
        changed = await store.update_user_returning(conn, uid, **changes) if changes else None
        user = changed if changed is not None else await _me(ctx, conn, claims)
        if changes:
            named = ("name", "pending_email", "locale")
            updated = ProfileUpdated(
                user_id=uid, fields=tuple(sorted(f for f in named if f in changes))
            )
            await publish_card(conn, vault, user, after=[updated])
        if new_address is not None:
            # To the address on the card just queued, while the card holds this change:
            # the notifier waits for that card, and drops the link if another replaced it.
            await mail_action_link(
                ctx, conn, uid, purpose="verify_email", template="verify_new_email",
                path="verify-email", card_changed_at=user["updated_at"],
                email_index=new_address, params={"change": str(changes["pending_change"])},
            )  # fmt: skip
    return user


async def _reauthenticate_for_email(ctx: Context, uid: UUID, password: str | None) -> str | None:
    """The password hash the caller's password was checked against."""
    if password is None:
        raise Problem(
            422,
            "Password required",
            "Enter your current password to change your email address.",
            slug="reauthentication-required",
        )
    async with ctx.pool.acquire() as conn:  # the session's row leaves the hash out
        user = await store.user_by_id(conn, uid)
    stored = user["password_hash"] if user is not None else None
    await reauthenticate(ctx, uid, stored, password, "The current password is wrong.")
    return stored


async def _edit_name_or_locale(
    ctx: Context, body: ProfileChange, seen: store.Row | None
) -> Profile | None:
    """A name or locale change in one statement, on the row the session check read: the
    change, its ProfileUpdated and the new card commit together, or (None) not at all
    when a card field changed since that read, and the locking path runs instead."""
    if seen is None or seen["id"] is None:
        return None
    uid, vault = seen["id"], ctx.vault
    name = await vault.seal(uid, body.name, purpose=NAME) if body.name else seen["name"]
    after = {**dict(seen), "name": name, "locale": body.locale or seen["locale"]}
    # Later than the card it replaces, whatever the skew between this clock and the DB's.
    after["updated_at"] = max(datetime.now(UTC), seen["updated_at"] + timedelta(microseconds=1))
    fields = tuple(f for f in ("locale", "name") if getattr(body, f) is not None)
    updated = ProfileUpdated(user_id=uid, fields=fields)
    card = await card_of(vault, after)
    _, outbox = outbox_arrays([(updated, str(uid)), (card, str(uid))], source=SOURCE)
    async with ctx.pool.acquire() as conn:
        done = await store.edit_as_read(
            conn, seen, name, after["locale"], after["updated_at"], outbox
        )
    return await _profile(ctx, after) if done else None


@router.put("/me/preferences", response_model=PreferencesSaved)
async def set_preferences(body: Preferences, claims: CurrentUser, ctx: Ctx) -> PreferencesSaved:
    """Marketing email, personalisation, tracking opt-out. Under 13, marketing stays off."""
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await _me(ctx, conn, claims, lock=True)
        marketing = body.marketing_email and user["age_band"] != "under_13"
        tracking_opt_out = body.tracking_opt_out or user["age_band"] == "under_13"
        await store.update_user(
            conn,
            uid,
            marketing_email=marketing,
            personalisation=body.personalisation,
            tracking_opt_out=tracking_opt_out,
        )
        now = Preferences(
            marketing_email=marketing,
            personalisation=body.personalisation,
            tracking_opt_out=tracking_opt_out,
        )
        fresh = await _me(ctx, conn, claims)
        changed = PreferencesChanged(user_id=uid, **now.model_dump())
        await publish_card(conn, ctx.vault, fresh, after=[changed])
    token = None
    # A token with the new choice, so the beacon honours it at once; but only for what
    # is left of the caller's: else flipping the choice would renew a stolen token for
    # ever, with no refresh token (the rotation and its reuse detection) ever shown.
    if tracking_opt_out != claims.tracking_opt_out and claims.exp - time.time() >= 1:
        ends = datetime.fromtimestamp(claims.exp, UTC)
        token = access_for(ctx, fresh, "user", UUID(claims.sid), expires_at=ends)
    return PreferencesSaved(**now.model_dump(), access_token=token)


# -- devices and content ---------------------------------------------------------------


async def _device(ctx: Context, row: store.Row) -> Device:
    return Device(
        id=row["id"],
        model=await ctx.vault.open(row["user_id"], row["model"], purpose=DEVICE_MODEL),
        damage_state=row["damage_state"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@router.get("/me/devices", response_model=list[Device])
async def list_devices(claims: CurrentUser, ctx: Ctx) -> list[Device]:
    async with ctx.pool.acquire() as conn:
        rows = await store.devices_of(conn, UUID(claims.sub))
    return [await _device(ctx, r) for r in rows]


@router.post("/me/devices", response_model=Device, status_code=status.HTTP_201_CREATED)
async def add_device(
    body: DeviceIn, claims: CurrentUser, ctx: Ctx, idempotency_key: IdempotencyKey
) -> Device | JSONResponse:
    """Add a device. With an ``Idempotency-Key``, sending it again adds none: the
    device added first is answered, as it stands."""
    refuse_card_numbers(model=body.model)
    uid, device_id = UUID(claims.sub), uuid4()
    sealed = await ctx.vault.seal(uid, body.model, purpose=DEVICE_MODEL)
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _me(ctx, conn, claims)
        key = await idempotency.claim(conn, uid, idempotency_key, "POST /me/devices", body)
        if isinstance(key, idempotency.Replayed):
            added = await store.device_of(conn, uid, UUID(key.answer["id"]))
            if added is None:  # removed since
                raise not_found("device")
            return key.response((await _device(ctx, added)).model_dump(mode="json"))
        await conn.execute(
            "INSERT INTO devices (id, user_id, model, damage_state) VALUES ($1, $2, $3, $4)",
            device_id,
            uid,
            sealed,
            body.damage_state,
        )
        await emit(
            conn,
            DeviceChanged(
                user_id=uid, device_id=device_id, change="added", damage_state=body.damage_state
            ),
            uid,
        )
        row = await store.device_of(conn, uid, device_id)
        await idempotency.answered(conn, key, status.HTTP_201_CREATED, {"id": str(device_id)})
    assert row is not None
    return await _device(ctx, row)


@router.get("/me/devices/{device_id}", response_model=Device)
async def read_device(device_id: UUID, claims: CurrentUser, ctx: Ctx) -> Device:
    async with ctx.pool.acquire() as conn:
        row = await store.device_of(conn, UUID(claims.sub), device_id)
    if row is None:
        raise not_found("device")
    return await _device(ctx, row)


@router.patch("/me/devices/{device_id}", response_model=Device)
async def edit_device(device_id: UUID, body: DeviceChange, claims: CurrentUser, ctx: Ctx) -> Device:
    refuse_card_numbers(model=body.model)
    uid = UUID(claims.sub)
    sealed = await ctx.vault.seal(uid, body.model, purpose=DEVICE_MODEL) if body.model else None
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await store.device_of(conn, uid, device_id, lock=True)
        if row is None:
            raise not_found("device")
        await conn.execute(
            "UPDATE devices SET model = coalesce($3, model),"
            " damage_state = coalesce($4, damage_state), updated_at = now()"
            " WHERE id = $1 AND user_id = $2",
            device_id,
            uid,
            sealed,
            body.damage_state,
        )
        row = await store.device_of(conn, uid, device_id)
        assert row is not None
        await emit(
            conn,
            DeviceChanged(
                user_id=uid,
                device_id=device_id,
                change="edited",
                damage_state=row["damage_state"],
            ),
            uid,
        )
    return await _device(ctx, row)


@router.delete("/me/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_device(device_id: UUID, claims: CurrentUser, ctx: Ctx) -> None:
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await store.set_aside_device(conn, uid, device_id):
            raise not_found("device")
        await emit(conn, DeviceChanged(user_id=uid, device_id=device_id, change="removed"), uid)
        await _record_item_deletion(conn, uid, "device", device_id)


@router.get("/me/content", response_model=Content)
async def personalised_content(claims: CurrentUser, ctx: Ctx) -> Content:
    """Content for the damage state of each device; the generic list when personalisation
    is off (or there is no device)."""
    async with ctx.pool.acquire() as conn:
        user = await _me(ctx, conn, claims)
        devices = await store.devices_of(conn, user["id"])
    personalised = bool(user["personalisation"] and devices)
    items = content_for([d["damage_state"] for d in devices], user["personalisation"])
    return Content(personalised=personalised, items=[ContentItem(**i) for i in items])


# -- requests and feedback -------------------------------------------------------------


async def _thread(ctx: Context, conn: Connection, request: store.Row) -> RequestThread:
    messages = await store.messages_of(conn, request["id"])
    uid = request["user_id"]
    return RequestThread(
        id=request["id"],
        category=request["category"],
        status=request["status"],
        created_at=request["created_at"],
        messages=[
            Message(
                id=m["id"],
                author=m["author"],
                text=await ctx.vault.open(uid, m["body"], purpose=MESSAGE_BODY),
                created_at=m["created_at"],
            )
            for m in messages
        ],
    )


@router.post("/me/requests", response_model=RequestThread, status_code=status.HTTP_201_CREATED)
async def submit_request(
    body: RequestIn, claims: CurrentUser, ctx: Ctx, idempotency_key: IdempotencyKey
) -> RequestThread | JSONResponse:
    """Submit a request or feedback. Text holding a card number is refused (P-09). With
    an ``Idempotency-Key``, sending it again submits nothing: the request submitted
    first is answered, its thread as it stands."""
    refuse_card_numbers(text=body.text)
    uid, request_id = UUID(claims.sub), uuid4()
    sealed = await ctx.vault.seal(uid, body.text, purpose=MESSAGE_BODY)
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _me(ctx, conn, claims)
        key = await idempotency.claim(conn, uid, idempotency_key, "POST /me/requests", body)
        if isinstance(key, idempotency.Replayed):
            submitted = await store.request_of(conn, uid, UUID(key.answer["id"]))
            if submitted is None:  # deleted since
                raise not_found("request")
            thread = await _thread(ctx, conn, submitted)
            return key.response(thread.model_dump(mode="json"))
        await conn.execute(
            "INSERT INTO requests (id, user_id, category) VALUES ($1, $2, $3)",
            request_id,
            uid,
            body.category,
        )
        await store.add_message(conn, uuid4(), request_id, "user", sealed)
        await emit(
            conn,
            RequestSubmitted(user_id=uid, request_id=request_id, category=body.category),
            uid,
        )
        row = await store.request_of(conn, uid, request_id)
        assert row is not None
        await idempotency.answered(conn, key, status.HTTP_201_CREATED, {"id": str(request_id)})
        return await _thread(ctx, conn, row)


@router.get("/me/requests", response_model=list[RequestSummary])
async def list_requests(claims: CurrentUser, ctx: Ctx) -> list[RequestSummary]:
    async with ctx.pool.acquire() as conn:
        rows = await store.requests_of(conn, UUID(claims.sub))
    return [RequestSummary(**{k: r[k] for k in RequestSummary.model_fields}) for r in rows]


@router.get("/me/requests/{request_id}", response_model=RequestThread)
async def read_request(request_id: UUID, claims: CurrentUser, ctx: Ctx) -> RequestThread:
    """The request with its thread: the user's messages and operators' replies."""
    async with ctx.pool.acquire() as conn:
        row = await store.request_of(conn, UUID(claims.sub), request_id)
        if row is None:
            raise not_found("request")
        return await _thread(ctx, conn, row)


@router.post(
    "/me/requests/{request_id}/messages",
    response_model=RequestThread,
    status_code=status.HTTP_201_CREATED,
)
async def add_request_message(
    request_id: UUID,
    body: MessageIn,
    claims: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey,
) -> RequestThread | JSONResponse:
    """Write again in a request's thread. With an ``Idempotency-Key``, sending it again
    adds no second message: the thread is answered as it stands."""
    refuse_card_numbers(text=body.text)
    uid, message_id = UUID(claims.sub), uuid4()
    sealed = await ctx.vault.seal(uid, body.text, purpose=MESSAGE_BODY)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await store.request_of(conn, uid, request_id, lock=True)
        if row is None:
            raise not_found("request")
        key = await idempotency.claim(
            conn, uid, idempotency_key, f"POST /me/requests/{request_id}/messages", body
        )
        if isinstance(key, idempotency.Replayed):
            thread = await _thread(ctx, conn, row)
            return key.response(thread.model_dump(mode="json"))
        await store.add_message(conn, message_id, request_id, "user", sealed)
        await conn.execute("UPDATE requests SET status = 'open' WHERE id = $1", request_id)
        row = await store.request_of(conn, uid, request_id)
        assert row is not None
        await idempotency.answered(conn, key, status.HTTP_201_CREATED, {"id": str(message_id)})
        return await _thread(ctx, conn, row)


@router.delete("/me/requests/{request_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_request(request_id: UUID, claims: CurrentUser, ctx: Ctx) -> None:
    """Delete one request or feedback entry with its thread."""
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await store.set_aside_request(conn, uid, request_id):
            raise not_found("request")
        await _record_item_deletion(conn, uid, "request", request_id)


async def _record_item_deletion(
    conn: Connection, uid: UUID, scope: Literal["device", "request"], item_id: UUID
) -> None:
    """Gone from every view here at once, set aside (``erasing_items``) until the deletion
    service has it erased: here and in the other stores, at once unless a legal hold on
    the user stops it (P-13); it also re-applies it to any backup restored later (P-12,
    P-16)."""
    await emit(
        conn,
        DeletionRequested(
            user_id=uid, request_id=uuid4(), initiated_by="user", scope=scope, item_id=item_id
        ),
        uid,
    )


# -- consents --------------------------------------------------------------------------


@router.get("/recipients", response_model=list[Recipient], tags=["consents"])
async def list_recipients(_: CurrentUser, ctx: Ctx) -> list[Recipient]:
    """The third parties a user may consent to, with purpose and fields they would get."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM recipients ORDER BY created_at, id")
    return [Recipient(**{k: r[k] for k in Recipient.model_fields}) for r in rows]


@router.get("/me/consents", response_model=ConsentHistory, tags=["consents"])
async def read_consents(claims: CurrentUser, ctx: Ctx) -> ConsentHistory:
    """Current consents (all off unless granted) and their full history."""
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn:
        current = await store.current_consents(conn, uid)
        history = await conn.fetch(
            "SELECT recipient_id, purpose, granted, at FROM consents WHERE user_id = $1"
            " ORDER BY id",
            uid,
        )
    return ConsentHistory(
        current=[Consent(**dict(r)) for r in current],
        history=[Consent(**dict(r)) for r in history],
    )


@router.put("/me/consents/{recipient_id}", response_model=Consent, tags=["consents"])
async def set_consent(
    recipient_id: UUID, body: ConsentIn, claims: CurrentUser, ctx: Ctx
) -> Consent:
    """Grant or revoke consent to one recipient for its registered purpose. Sent again
    with the choice in force, it changes nothing (no record, no event): the consent
    keeps the time it was given or withdrawn."""
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn, conn.transaction():
        # The user's row first, as an export holds it: a withdrawal and an export to the
        # same recipient come one after the other, so one the export made is forwarded.
        await _me(ctx, conn, claims, lock=True)
        recipient = await conn.fetchrow("SELECT * FROM recipients WHERE id = $1", recipient_id)
        if recipient is None:
            raise not_found("recipient")
        # The latest by id, as exports (store.consenting_users) and the user's view
        # read it: ``at`` is the database's clock, which may step back, and a choice
        # judged against another one than theirs could be taken as in force already.
        in_force = await conn.fetchrow(
            "SELECT recipient_id, purpose, granted, at FROM consents WHERE user_id = $1"
            " AND recipient_id = $2 AND purpose = $3 ORDER BY id DESC LIMIT 1",
            uid,
            recipient_id,
            recipient["purpose"],
        )
        if in_force is not None and in_force["granted"] == body.granted:
            return Consent(**dict(in_force))
        was_granted = in_force is not None and in_force["granted"]
        row = await conn.fetchrow(
            "INSERT INTO consents (user_id, recipient_id, purpose, granted)"
            " VALUES ($1, $2, $3, $4) RETURNING recipient_id, purpose, granted, at",
            uid,
            recipient_id,
            recipient["purpose"],
            body.granted,
        )
        await emit(
            conn,
            ConsentChanged(
                user_id=uid,
                recipient_id=recipient_id,
                purpose=recipient["purpose"],
                granted=body.granted,
            ),
            uid,
        )
        if was_granted and not body.granted:
            # Every export, a processor's too, is made only of consenting users: what
            # the recipient holds was given on the strength of this consent, so it is
            # told to erase it.
            await forward_to_recipients(
                conn, uid, uuid4(), "consent_withdrawn", recipient_id=recipient_id
            )
    assert row is not None
    return Consent(**dict(row))


# -- policy ----------------------------------------------------------------------------


@router.get("/policy/current", response_model=PolicyVersion, tags=["policy"])
async def current_policy(ctx: Ctx) -> PolicyVersion:
    """The privacy-policy version in force (no login needed)."""
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM policy_versions WHERE effective_at <= now()"
            " ORDER BY effective_at DESC, published_at DESC LIMIT 1"
        )
    if row is None:
        raise not_found("policy version")
    return PolicyVersion(**{k: row[k] for k in PolicyVersion.model_fields})


@router.post(
    "/me/policy-acceptances",
    response_model=PolicyAcceptance,
    tags=["policy"],
    status_code=status.HTTP_201_CREATED,
)
async def accept_policy(
    body: PolicyAcceptanceIn, claims: CurrentUser, ctx: Ctx
) -> PolicyAcceptance:
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _me(ctx, conn, claims)
        effective = await conn.fetchval(
            "SELECT effective_at FROM policy_versions WHERE version = $1", body.version
        )
        if effective is None:
            raise not_found("policy version")
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM policy_versions"
            " WHERE effective_at > $1 AND effective_at <= now())",
            effective,
        ):
            raise Problem(
                409,
                "Version superseded",
                "A later version of the policy is in force: accept that one.",
                slug="policy-version-superseded",
            )
        row = await conn.fetchrow(
            "INSERT INTO policy_acceptances (user_id, version) VALUES ($1, $2)"
            " ON CONFLICT (user_id, version) DO UPDATE SET version = EXCLUDED.version"
            " RETURNING version, accepted_at",
            uid,
            body.version,
        )
        await emit(conn, PolicyAccepted(user_id=uid, policy_version=body.version), uid)
    assert row is not None
    return PolicyAcceptance(**dict(row))


@router.get("/me/policy-acceptances", response_model=list[PolicyAcceptance], tags=["policy"])
async def my_policy_acceptances(claims: CurrentUser, ctx: Ctx) -> list[PolicyAcceptance]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT version, accepted_at FROM policy_acceptances WHERE user_id = $1"
            " ORDER BY accepted_at",
            UUID(claims.sub),
        )
    return [PolicyAcceptance(**dict(r)) for r in rows]


# -- invoices --------------------------------------------------------------------------


@router.get("/me/invoices", response_model=list[Invoice], tags=["invoices"])
async def my_invoices(claims: CurrentUser, ctx: Ctx) -> list[Invoice]:
    """My repair invoices (recorded by iMT; kept anonymised for their period after erasure)."""
    async with ctx.pool.acquire() as conn:
        rows = await store.invoices_of(conn, UUID(claims.sub))
    return [await invoice_out(ctx.vault, r) for r in rows]


# -- export ----------------------------------------------------------------------------


@router.get("/me/export", tags=["export"])
async def export_my_data(claims: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    """Everything accounts holds about me, as one JSON document (rate-limited)."""
    uid = UUID(claims.sub)
    limit = ctx.settings.accounts_exports_per_hour
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await _me(ctx, conn, claims, lock=True)
        recent = await conn.fetchval(
            "SELECT count(*) FROM data_exports WHERE user_id = $1"
            " AND at > now() - interval '1 hour'",
            uid,
        )
        if recent >= limit:
            raise Problem(
                429,
                "Too many exports",
                f"At most {limit} exports an hour; try again later.",
                slug="export-rate-limited",
                headers={"Retry-After": "3600"},
            )
        await conn.execute("INSERT INTO data_exports (user_id) VALUES ($1)", uid)
        devices = await store.devices_of(conn, uid)
        requests = [await _thread(ctx, conn, r) for r in await store.requests_of(conn, uid)]
        consents = await conn.fetch(
            "SELECT recipient_id, purpose, granted, at FROM consents WHERE user_id = $1"
            " ORDER BY id",
            uid,
        )
        acceptances = await conn.fetch(
            "SELECT version, accepted_at FROM policy_acceptances WHERE user_id = $1", uid
        )
        deletions = await conn.fetch(
            "SELECT id, status, initiated_by, created_at, updated_at FROM deletion_requests"
            " WHERE user_id = $1 ORDER BY created_at",
            uid,
        )
        invoices = await store.invoices_of(conn, uid)
        disclosures = await conn.fetch(
            "SELECT d.at, d.fields, r.name AS recipient, r.purpose FROM disclosures d"
            " JOIN recipients r ON r.id = d.recipient_id WHERE d.user_id = $1 ORDER BY d.id",
            uid,
        )
        # Deleted, out of sight, but still held until erased (a legal hold may stop it).
        awaiting = await conn.fetch(
            "SELECT scope, item_id, deleted_at, rows FROM erasing_items WHERE user_id = $1"
            " ORDER BY deleted_at",
            uid,
        )
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "profile": (await _profile(ctx, user)).model_dump(mode="json"),
        "devices": [(await _device(ctx, d)).model_dump(mode="json") for d in devices],
        "requests": [r.model_dump(mode="json") for r in requests],
        "consents": [Consent(**dict(c)).model_dump(mode="json") for c in consents],
        "policy_acceptances": [
            PolicyAcceptance(**dict(a)).model_dump(mode="json") for a in acceptances
        ],
        "deletion_requests": [
            DeletionRequest(**dict(d)).model_dump(mode="json") for d in deletions
        ],
        "invoices": [(await invoice_out(ctx.vault, i)).model_dump(mode="json") for i in invoices],
        "disclosures": [
            {
                "at": d["at"].isoformat(),
                "fields": list(d["fields"]),
                "recipient": d["recipient"],
                "purpose": d["purpose"],
            }
            for d in disclosures
        ],
        "deleted_awaiting_erasure": [await _set_aside(ctx, uid, a) for a in awaiting],
    }


async def _set_aside(ctx: Context, uid: UUID, item: store.Row) -> dict[str, Any]:
    """A deleted item still held (its erasure waits, e.g. on a legal hold), with what the
    user gave in it: still stored, so still theirs to see (P-11)."""
    rows = item["rows"]
    shown: dict[str, Any] = {
        "scope": item["scope"],
        "id": str(item["item_id"]),
        "deleted_at": item["deleted_at"].isoformat(),
    }
    if item["scope"] == "device":
        sealed = _bytea(rows["model"])
        shown["model"] = await ctx.vault.open(uid, sealed, purpose=DEVICE_MODEL)
        shown["damage_state"] = rows["damage_state"]
    else:
        shown["category"] = rows["request"]["category"]
        shown["messages"] = [
            {
                "author": m["author"],
                "created_at": m["created_at"],
                "text": await ctx.vault.open(uid, _bytea(m["body"]), purpose=MESSAGE_BODY),
            }
            for m in rows["messages"]
        ]
    return shown


def _bytea(value: str) -> bytes:
    """A bytea column as to_jsonb wrote it (``\\x`` and hex)."""
    return bytes.fromhex(value.removeprefix("\\x"))


# -- deletion --------------------------------------------------------------------------


@router.post(
    "/me/deletion-requests",
    response_model=DeletionRequest,
    tags=["deletion"],
    status_code=status.HTTP_202_ACCEPTED,
)
async def request_deletion(
    body: Reauthentication, claims: CurrentUser, ctx: Ctx
) -> DeletionRequest:
    """Ask to delete the whole account; the password must be entered again."""
    uid = UUID(claims.sub)
    async with ctx.pool.acquire() as conn:
        user = await _me(ctx, conn, claims)
    detail = "Enter your password to delete your account."
    await reauthenticate(ctx, uid, user["password_hash"], body.password, detail)
    request_id = uuid4()
    async with ctx.pool.acquire() as conn, conn.transaction():
        await still_reauthenticated(conn, uid, UUID(claims.sid), user["password_hash"])
        existing = await cancel_window.active_request(conn, uid)
        if existing is not None:
            return DeletionRequest(**{k: existing[k] for k in DeletionRequest.model_fields})
        row = await conn.fetchrow(
            "INSERT INTO deletion_requests (id, user_id, initiated_by, status)"
            " VALUES ($1, $2, 'user', 'requested') RETURNING *",
            request_id,
            uid,
        )
        await emit(
            conn, DeletionRequested(user_id=uid, request_id=request_id, initiated_by="user"), uid
        )
        await cancel_window.notify_deletion_requested(ctx, conn, uid, request_id)
    assert row is not None
    return DeletionRequest(**{k: row[k] for k in DeletionRequest.model_fields})


@router.get("/me/deletion-requests", response_model=list[DeletionRequest], tags=["deletion"])
async def my_deletion_requests(claims: CurrentUser, ctx: Ctx) -> list[DeletionRequest]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM deletion_requests WHERE user_id = $1 AND status <> ALL($2::text[])"
            " ORDER BY created_at",
            UUID(claims.sub),
            cancel_window.NEVER_APPROVED,
        )
    return [DeletionRequest(**{k: r[k] for k in DeletionRequest.model_fields}) for r in rows]


@router.post(
    "/me/deletion-requests/{request_id}/cancel", response_model=DeletionRequest, tags=["deletion"]
)
async def cancel_deletion(request_id: UUID, claims: CurrentUser, ctx: Ctx) -> DeletionRequest:
    """Cancel a deletion request during its grace period: once accounts took the cancel,
    nothing is erased. After the grace period (status ``confirmed``) the answer is 409."""
    uid = UUID(claims.sub)
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await cancel_window.cancel(conn, request_id, uid)
    except cancel_window.NotCancellable as exc:
        raise _not_cancellable(exc.status) from None
    if row is None:
        raise not_found("deletion request")
    return DeletionRequest(**{k: row[k] for k in DeletionRequest.model_fields})


class CancelLink(BaseModel):
    token: str = Field(min_length=10, max_length=200)


@router.post("/deletion-cancellations", response_model=DeletionRequest, tags=["deletion"])
async def cancel_deletion_by_link(body: CancelLink, ctx: Ctx) -> DeletionRequest:
    """Cancel a deletion request with the token of the link mailed when it was made: no
    sign-in needed (cancelling only keeps the account). ``400 link-invalid`` for a link
    unknown, expired, or spent by a later request; ``409 link-used`` for one whose
    request is cancelled (a retry whose answer was lost, or a cancel signed in), no
    other deletion under way; ``409 deletion-not-cancellable`` once the grace period
    ended."""
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await cancel_window.cancel_by_link(conn, secret_hash(body.token))
    except cancel_window.NotCancellable as exc:
        raise _not_cancellable(exc.status) from None
    except cancel_window.AlreadyCancelled:
        raise link_used(
            "This link was already used: your account deletion is cancelled, nothing was deleted."
        ) from None
    if row is None:
        raise link_invalid()
    return DeletionRequest(**{k: row[k] for k in DeletionRequest.model_fields})


def _not_cancellable(status: str) -> Problem:
    if status == "cancelled":
        detail = "This deletion request was cancelled already."
    else:
        detail = (
            "The grace period of this deletion request has ended: it can no longer be cancelled."
        )
    return Problem(409, "Not cancellable", detail, slug="deletion-not-cancellable")
