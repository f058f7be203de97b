"""The notifier's command (how any service sends a notice) and its delivery events."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.registry import Event, register_event
from shared.events.topics import NOTIFIER_COMMANDS, NOTIFIER_DELIVERIES, Topic

NoticeCategory = Literal[
    "transactional", "account_security", "service_announcement", "policy_change", "marketing"
]


@register_event
class SendNotice(Event):
    """Command: send a templated notice to all users or listed ones.

    Addresses never travel here: the notifier takes them from its contact-card
    projection. ``params`` hold ids, opaque tokens and wording, never personal data.
    """

    event_name: ClassVar[str] = "notice.send"
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "command"
    topic: ClassVar[Topic] = NOTIFIER_COMMANDS
    notice_id: UUID
    template: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    category: NoticeCategory
    audience: Literal["all", "listed"]
    user_ids: tuple[UUID, ...] = ()
    params: dict[str, str] = {}
    channels: tuple[Literal["email", "inbox"], ...] = ("email", "inbox")
    # "guardian" mails the parent named on an under-13 user's contact card (consent links).
    recipient: Literal["user", "guardian"] = "user"
    send_at: datetime | None = None
    # A link for a just-changed address must reach that address: the email waits until
    # the notifier's copy of the card is at least this new (cards and commands travel on
    # different topics, so either may arrive first).
    card_changed_at: datetime | None = None


@register_event
class NoticeDelivered(Event):
    """Outcome of one notice to one recipient on one channel."""

    event_name: ClassVar[str] = "notice.delivered"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = NOTIFIER_DELIVERIES
    notice_id: UUID
    user_id: UUID
    channel: Literal["email", "inbox"]
    outcome: Literal["sent", "suppressed", "refused", "failed"]
    reason: str | None = None
