"""Events the accounts service publishes.

Lifecycle events carry ids and facts only. Personal data (email, name) rides only on
the compacted contacts topic, as :class:`ContactCardChanged`, so erasing a user is one
tombstone on one topic; and there it is sealed with the subject's vault key, so
shredding the key makes every copy unreadable at once, old segments included.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import BeforeValidator, EmailStr, Field, PlainSerializer, WithJsonSchema

from shared.events.registry import Event, register_event
from shared.events.topics import (
    ACCOUNTS_AUDIT,
    ACCOUNTS_CONTACTS,
    ACCOUNTS_LIFECYCLE,
    ACCOUNTS_RECIPIENT_ERASURES,
    ACCOUNTS_REQUESTS,
    ACCOUNTS_SESSIONS,
    POLICY_VERSIONS,
    SECURITY_INCIDENTS,
    Topic,
)

AgeBand = Literal["under_13", "13_to_17", "adult", "unknown"]
DamageState = Literal["intact", "cracked_screen", "battery", "water", "buttons", "camera", "other"]


class _Lifecycle(Event):
    topic: ClassVar[Topic] = ACCOUNTS_LIFECYCLE
    user_id: UUID


@register_event
class UserRegistered(_Lifecycle):
    """A user signed up; under-13 accounts wait for a parent's consent."""

    event_name: ClassVar[str] = "user.registered"
    version: ClassVar[int] = 1
    age_band: AgeBand
    awaiting_parental_consent: bool = False


@register_event
class UserActivated(_Lifecycle):
    """Email verified (and, under 13, the parent consented): the account is active."""

    event_name: ClassVar[str] = "user.activated"
    version: ClassVar[int] = 1


@register_event
class ProfileUpdated(_Lifecycle):
    """Which profile fields changed (names of fields, never their values)."""

    event_name: ClassVar[str] = "profile.updated"
    version: ClassVar[int] = 1
    fields: tuple[str, ...]


@register_event
class PreferencesChanged(_Lifecycle):
    """A user's communication and tracking preferences, as they now are."""

    event_name: ClassVar[str] = "preferences.changed"
    version: ClassVar[int] = 1
    marketing_email: bool
    personalisation: bool
    tracking_opt_out: bool


@register_event
class DeviceChanged(_Lifecycle):
    """A device was added, edited or removed."""

    event_name: ClassVar[str] = "device.changed"
    version: ClassVar[int] = 1
    device_id: UUID
    change: Literal["added", "edited", "removed"]
    damage_state: DamageState | None = None


@register_event
class ConsentChanged(_Lifecycle):
    """Consent to disclose to one recipient for one purpose was granted or revoked."""

    event_name: ClassVar[str] = "consent.changed"
    version: ClassVar[int] = 1
    recipient_id: UUID
    purpose: str
    granted: bool


@register_event
class PolicyAccepted(_Lifecycle):
    """The user accepted a privacy-policy version."""

    event_name: ClassVar[str] = "policy.accepted"
    version: ClassVar[int] = 1
    policy_version: str


@register_event
class DeletionRequested(_Lifecycle):
    """A deletion was asked for: of the account, or of one of its items.

    The account: by the user (re-authenticated) or by two operators. An item (``scope``
    device or request, ``item_id``): the user deleted it, accounts took it out of sight
    at once, and the deletion service has it erased everywhere, backups included."""

    event_name: ClassVar[str] = "deletion.requested"
    version: ClassVar[int] = 1
    request_id: UUID
    initiated_by: Literal["user", "operator"]
    scope: Literal["account", "device", "request"] = "account"
    item_id: UUID | None = None


@register_event
class SignupLapsed(_Lifecycle):
    """A sign-up was never completed: its address was not verified (or, under 13, no
    guardian consented) within the lapse period, and every link mailed for it expired.

    Accounts asks for the whole account's erasure everywhere, under ``request_id``, as
    a deletion request the deletion service runs with no grace period: no one can sign
    in to cancel it, and nothing it holds was ever confirmed. A child's data is not kept
    without a guardian's consent (P-26), nor anyone's for an account never used (P-13)."""

    event_name: ClassVar[str] = "signup.lapsed"
    version: ClassVar[int] = 1
    request_id: UUID


@register_event
class RecipientErasureRequestedV1(Event):
    """A processor or partner the subject's data was disclosed to is asked to erase it
    (P-19): the exports that held the subject, once per recipient and subject, when the
    account is erased.

    Still published for an account's erasure, next to version 2, for the connectors
    that read this version; version 2 also says what to erase when it is less."""

    event_name: ClassVar[str] = "recipient.erasure_requested"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ACCOUNTS_RECIPIENT_ERASURES
    recipient_id: UUID
    subject_id: UUID
    request_id: UUID
    export_ids: tuple[UUID, ...]


@register_event
class RecipientErasureRequested(Event):
    """A processor or partner the subject's data was disclosed to is asked to erase what
    of the subject the listed exports held (P-19): everything when the account is erased
    (once per recipient and subject) or when the user withdraws the consent the
    recipient's exports were made under (P-18); only ``fields`` when the user deleted a
    device."""

    event_name: ClassVar[str] = "recipient.erasure_requested"
    version: ClassVar[int] = 2
    topic: ClassVar[Topic] = ACCOUNTS_RECIPIENT_ERASURES
    recipient_id: UUID
    subject_id: UUID
    request_id: UUID = Field(
        description="The deletion request; for a withdrawn consent, an id of its own."
    )
    export_ids: tuple[UUID, ...]
    reason: Literal["account_erased", "item_deleted", "consent_withdrawn"]
    fields: tuple[str, ...] = Field(
        description="Only these fields of the subject; none listed: everything."
    )


@register_event
class DeletionCancelled(_Lifecycle):
    """A deletion request was cancelled during its grace period."""

    event_name: ClassVar[str] = "deletion.cancelled"
    version: ClassVar[int] = 1
    request_id: UUID


@register_event
class DeletionConfirmed(_Lifecycle):
    """The cancel window of a whole-account deletion closed with no cancel: accounts
    refuses cancels of it from now on, and the deletion service may start erasing.

    Published once the deletion service said the grace period ended (stage ``holds``);
    never for a request accounts saw cancelled, so a cancel it took is never erased."""

    event_name: ClassVar[str] = "deletion.confirmed"
    version: ClassVar[int] = 1
    request_id: UUID


# The vault purposes of the sealed card fields (authenticated with the ciphertext).
CARD_EMAIL = "contacts.card.email"
CARD_NAME = "contacts.card.name"
CARD_GUARDIAN_EMAIL = "contacts.card.guardian_email"
CARD_PENDING_EMAIL = "contacts.card.pending_email"


def _unbase64(value: object) -> object:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


Sealed = Annotated[
    bytes,
    BeforeValidator(_unbase64),
    PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
"""Bytes sealed by the vault (nonce, ciphertext, tag); base64 in JSON."""


class _ContactCard(Event):
    """What every version of the card holds in clear (no personal data)."""

    topic: ClassVar[Topic] = ACCOUNTS_CONTACTS
    user_id: UUID
    locale: str = "en"
    age_band: AgeBand
    marketing_email: bool = False
    tracking_opt_out: bool = False
    active: bool = True
    changed_at: datetime | None = Field(
        None, description="When accounts last changed the card: orders a user's cards."
    )


@register_event
class ContactCardChanged(_ContactCard):
    """The current contact card of a user: the only event carrying personal data.

    Published on the compacted contacts topic keyed by user id; erasure publishes a
    tombstone for that key instead of an event. Email, name, guardian email and an
    address waiting for confirmation are sealed with the subject's vault key under the
    purposes above: a consumer opens them through the vault
    (``shared.contact_card.open_card``), and once the subject is erased no one can,
    whether compaction has removed the record yet or not.
    """

    event_name: ClassVar[str] = "contact_card.changed"
    version: ClassVar[int] = 2
    email: Sealed = Field(description="The email address, sealed (CARD_EMAIL).")
    name: Sealed = Field(description="The name, sealed (CARD_NAME).")
    guardian_email: Sealed | None = Field(
        None, description="Under 13: the parent who must consent, sealed (CARD_GUARDIAN_EMAIL)."
    )
    pending_email: Sealed | None = Field(
        None,
        description=(
            "An address the user asked to change to, not confirmed yet: only the link that"
            " confirms it is mailed there, sealed (CARD_PENDING_EMAIL)."
        ),
    )
    pending_change: UUID | None = Field(
        None,
        description=(
            "Which change the pending address is (random): the notice of its link names it,"
            " and the link is mailed only while the card holds that change."
        ),
    )


@register_event
class ContactCardChangedV1(_ContactCard):
    """Version 1 of the contact card, with email, name and guardian email in clear.

    No longer published. Still read, for records on the compacted topic from before
    version 2: ``python -m services.accounts.reseal_cards`` replaces every one of them.
    """

    event_name: ClassVar[str] = "contact_card.changed"
    version: ClassVar[int] = 1
    email: EmailStr
    name: str = Field(max_length=200)
    guardian_email: EmailStr | None = None  # under 13: the parent who must consent


SessionEndReason = Literal[
    "logout",
    "refresh-token-reuse",
    "principal-gone",
    "password-changed",
    "password-reset",
]


@register_event
class SessionsRevoked(Event):
    """Sessions of a user or operator ended: their access tokens must stop working now.

    ``session_ids`` are the sessions that ended. ``issued_before``, when set, ends every
    session of the principal: any access token issued (``iat``, whole seconds) before that
    second is refused, whichever session it names. Keyed by the principal."""

    event_name: ClassVar[str] = "sessions.revoked"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ACCOUNTS_SESSIONS
    principal_id: UUID
    session_ids: tuple[UUID, ...] = ()
    issued_before: datetime | None = None
    revoked_at: datetime
    reason: SessionEndReason


@register_event
class RequestSubmitted(Event):
    """A user submitted a request or feedback (its text stays in accounts)."""

    event_name: ClassVar[str] = "request.submitted"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ACCOUNTS_REQUESTS
    user_id: UUID
    request_id: UUID
    category: Literal["repair", "feedback", "privacy", "other"]


@register_event
class RequestReplied(Event):
    """An operator replied to a user's request; the reply text stays in accounts."""

    event_name: ClassVar[str] = "request.replied"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ACCOUNTS_REQUESTS
    user_id: UUID
    request_id: UUID
    reply_id: UUID


@register_event
class PolicyVersionPublished(Event):
    """A new privacy-policy version was published; every user is to be told."""

    event_name: ClassVar[str] = "policy_version.published"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = POLICY_VERSIONS
    policy_version: str
    summary: str = Field(max_length=2000)
    effective_at: datetime


@register_event
class IncidentDeclared(Event):
    """Operators declared a security incident affecting all users or a list."""

    event_name: ClassVar[str] = "incident.declared"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = SECURITY_INCIDENTS
    incident_id: UUID
    title: str = Field(max_length=200)
    message: str = Field(max_length=5000)
    audience: Literal["all", "listed"]
    user_ids: tuple[UUID, ...] = ()


@register_event
class AuditLogAppended(Event):
    """A row joined the operator audit log: its place in the hash chain and the chain's
    hash there. No ids: the row itself stays in the accounts database."""

    event_name: ClassVar[str] = "audit_log.appended"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ACCOUNTS_AUDIT
    chain_seq: int = Field(ge=1)
    chain: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256, hex")
