"""What the deletion API answers, typed for its OpenAPI document (``shared.service.answers``:
the routes build these as dicts; a key a model does not name fails the route)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from shared.events.catalogue.deletion import DeletionStage
from shared.service.answers import Answer, Timestamp


class StageDate(Answer):
    stage: DeletionStage
    done_at: Timestamp | None = Field(description="When the request entered it; null if not yet.")
    expected_by: Timestamp | None = Field(
        description="When it is expected, for a stage still to come (null if unknown)."
    )


class ByRegime(Answer):
    gdpr: bool
    ccpa: bool


class LegalDeadlines(Answer):
    gdpr: Timestamp = Field(description="One month after the request (GDPR art. 12(3)).")
    ccpa: Timestamp = Field(description="45 days after the request (CCPA).")


class DeletionStatus(Answer):
    """A deletion request as its user sees it: its stage and the date of each to come."""

    request_id: UUID
    scope: Literal["account", "device", "request"]
    item_id: UUID | None = Field(description="The device or request erased; null for an account.")
    stage: DeletionStage
    on_hold: bool = Field(description="Paused by a legal hold.")
    requested_at: Timestamp
    cancellable_until: Timestamp | None = Field(
        description=(
            "While accounts still takes a cancel (whole accounts only): the end of the grace"
            " period, or now once that has passed; null once a cancel is no longer taken."
        )
    )
    stages: list[StageDate] = Field(description="Every stage of its path, in order.")
    legal_deadlines: LegalDeadlines
    overdue: ByRegime = Field(description="Whether the erasure is late against each law.")
    certificate_digest: str | None = Field(
        description="SHA-256 of the certificate, once the request is complete."
    )


class DeletionStatuses(Answer):
    requests: list[DeletionStatus] = Field(description="Newest first, ``limit`` at most.")
    next_before: UUID | None = Field(
        description="Pass as ``before`` for the next page; null on the last one."
    )


class DeletionCertificate(Answer):
    certificate: dict[str, Any] = Field(
        description="What was erased where, what was kept anonymised and by which rule,"
        " the stage times and the verification: the JSON whose digest is given."
    )
    digest: str = Field(
        description="SHA-256 (hex) of the certificate as canonical JSON (sorted keys, no spaces)."
    )


class FollowedDeletion(Answer):
    """An account's erasure as its final email's link shows it (no sign-in)."""

    status: DeletionStatus
    certificate: DeletionCertificate | None = Field(
        description="The deletion certificate once the request is complete; null before."
    )


# -- operators ------------------------------------------------------------------------------


class Receipt(Answer):
    store: str
    erased: dict[str, int] = Field(description="Rows erased per table (or topic).")
    erased_at: Timestamp
    superseded: bool = Field(description="An earlier pass an operator retried: proof only.")
    kind: Literal["erasure", "release"] = Field(
        description="What the receipt answers: the request's erasure itself, or one of its"
        " retention releases (recorded under the same request; never the erasure's counts)."
    )
    release_category: str | None = Field(
        description="The category the release erased (as in ``releases``); null for the"
        " erasure's receipts, or if the release is not on record."
    )


class Release(Answer):
    """A retention release: the end of a category's period, erasing what it kept."""

    category: str
    due_at: Timestamp
    sent_at: Timestamp | None
    answered_at: Timestamp | None
    escalated_at: Timestamp | None
    reason: str | None


class Restatement(Answer):
    reason: str
    stated_by: UUID | None
    stated_at: Timestamp
    request_id: UUID


class LegalHold(Answer):
    """The subject's hold in force: its first placement, and each restatement since."""

    reason: str
    placed_by: UUID | None
    placed_at: Timestamp
    request_id: UUID | None = Field(description="The request it was placed through.")
    restatements: list[Restatement]


class DeletionDetail(DeletionStatus):
    """A request as operators see it: the user's view, and what each store answered."""

    reason: str | None = Field(description="Why it is paused or escalated.")
    receipts: list[Receipt]
    releases: list[Release] = Field(description="Its retention releases, answered or not.")
    legal_hold: LegalHold | None


class LateRequest(Answer):
    request_id: UUID
    stage: DeletionStage
    requested_at: Timestamp
    due: Timestamp = Field(description="The earlier of the GDPR and CCPA deadlines.")
    overdue: ByRegime


class Escalation(Answer):
    request_id: UUID
    reason: str | None
    since: Timestamp


class ReleaseEscalation(Answer):
    request_id: UUID
    erase_id: UUID
    category: str
    reason: str | None
    since: Timestamp


class Pipeline(Answer):
    counts: dict[DeletionStage, int] = Field(description="Requests per stage.")
    overdue: list[LateRequest]
    escalations: list[Escalation] = Field(description="Longest waiting first.")
    release_escalations: list[ReleaseEscalation]


class Finding(Answer):
    place: str = Field(description="A table, topic or backup: never a value.")
    rows: int
    kept_by_rule: str | None = Field(description="The retention rule that keeps it, if any.")


class Verification(Answer):
    clean: bool
    summary: str
    scanned: list[str]
    vault_key_shredded: bool | None = Field(description="Null for an item's deletion.")
    findings: list[Finding]
