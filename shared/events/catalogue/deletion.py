"""Commands and events of staged deletion."""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.registry import Event, register_event
from shared.events.topics import DELETION_COMMANDS, DELETION_RECEIPTS, DELETION_STAGES, Topic

DeletionStage = Literal[
    "requested",
    "grace",
    "holds",
    "erasing",
    "shredded",
    "backups_pending",
    "complete",
    "cancelled",
    "paused",
    "escalated",
]


#: In ``EraseSubject.retain_categories`` while a legal hold is on the subject.
UNDER_LEGAL_HOLD = "legal_hold"


@register_event
class EraseSubject(Event):
    """Command to every store owner: erase this subject (or one item of it)."""

    event_name: ClassVar[str] = "subject.erase"
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "command"
    topic: ClassVar[Topic] = DELETION_COMMANDS
    request_id: UUID
    subject_id: UUID
    scope: Literal["account", "device", "request"] = "account"
    item_id: UUID | None = None
    retain_categories: tuple[str, ...] = Field(
        (),
        description="Categories of records kept for their period (retention.toml); with"
        f" {UNDER_LEGAL_HOLD!r} while a legal hold is on the subject: nothing whose own"
        " period ended goes early then.",
    )
    confirm_to_subject: bool = Field(
        True,
        description="Whether the notifier mails the subject that the erasure is done; not"
        " for a sign-up never completed (its address was never confirmed).",
    )
    shredded_by: datetime | None = Field(
        None,
        description="An account's erasure: when the subject's vault key is expected to be"
        " shredded (every store answered; the request's `shredded` stage date as the"
        " deletion service shows it when it sends the command). None for an item, a"
        " retention release, and a command sent before the field existed.",
    )
    backups_gone_by: datetime | None = Field(
        None,
        description="An account's erasure: when the last backup holding the subject is"
        " expected to have expired (the request's `complete` stage date as the deletion"
        " service shows it when it sends the command). None as for `shredded_by`.",
    )
    status_key: str | None = Field(
        None,
        max_length=128,
        description="An account's erasure confirmed to the subject: the secret of the link"
        " in the final email, with which the subject follows the stages that remain and"
        " gets the certificate without signing in; the same on every resend (the"
        " notifier mails the first command it can process). None for an item, a"
        " retention release, an erasure mailed to no one, and as for `shredded_by`.",
    )


@register_event
class SubjectErased(Event):
    """A store owner's receipt: what it erased and what it keeps anonymised."""

    event_name: ClassVar[str] = "subject.erased"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = DELETION_RECEIPTS
    request_id: UUID
    subject_id: UUID
    store: str
    erased: dict[str, int]
    retained_anonymised: dict[str, int] = {}
    erased_at: datetime
    retained_until: dict[str, date] = Field(
        default_factory=dict,
        description="Per kept category (financial_records, ...), the day the youngest of"
        " the records this store keeps reaches the end of its own period, when that comes"
        " before the period counted from the erasure: the category's release is then due"
        " that day. A store keeping records of a category it cannot date says nothing.",
    )


@register_event
class DeletionStageChanged(Event):
    """A deletion request entered a new stage."""

    event_name: ClassVar[str] = "deletion_stage.changed"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = DELETION_STAGES
    request_id: UUID
    subject_id: UUID
    stage: DeletionStage
    reason: str | None = None
    entered_at: datetime
