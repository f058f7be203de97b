"""A user's own data as the notifier holds it, in one JSON document (P-11).

Accounts' export (``/api/accounts/me/export``) holds what the user gave accounts; this
one holds the rest: the notifier's copy of the contact card, the user's email choices
(unsubscribes), every email planned for them with its outcome, their in-site notices,
the privacy-policy versions they were told of, and a replaced address still waiting to
be told of an email change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from services.notifier.handlers import (
    EMAIL_PURPOSE,
    GUARDIAN_PURPOSE,
    NAME_PURPOSE,
    PENDING_PURPOSE,
)
from services.notifier.routes.deps import RuntimeDep, user_id
from shared.auth import CurrentUser

router = APIRouter(prefix="/me", tags=["users"])

_CHOICES = """
SELECT s.category, s.source, s.created_at FROM suppressions s
JOIN contacts c ON c.email_index = s.email_index WHERE c.user_id = $1 ORDER BY s.created_at
"""
# A link confirming a new address went to whoever holds that address: whether it was
# sent, suppressed or bounced is theirs to know (a suppressed address is one that had
# mail from us), so the account's export shows that it was asked for, not its outcome.
_EMAILS = """
SELECT d.notice_id, n.template, n.category, d.created_at,
       CASE WHEN n.recipient = 'pending' THEN NULL ELSE d.status END AS status,
       CASE WHEN n.recipient = 'pending' THEN NULL ELSE d.outcome END AS outcome,
       CASE WHEN n.recipient = 'pending' THEN NULL ELSE d.attempts END AS attempts,
       CASE WHEN n.recipient = 'pending' THEN NULL ELSE d.finished_at END AS finished_at
FROM deliveries d JOIN notices n USING (notice_id) WHERE d.user_id = $1 ORDER BY d.id
"""
_INBOX = """
SELECT i.notice_id, n.template, n.category, i.pinned, i.created_at, i.read_at,
       i.acknowledged_at
FROM inbox_items i JOIN notices n USING (notice_id) WHERE i.user_id = $1 ORDER BY i.id
"""
_POLICIES = """
SELECT policy_version, notified_at, emailed_at, seen_at FROM policy_notices
WHERE user_id = $1 ORDER BY notified_at
"""


@router.get("/export")
async def export_my_data(user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    """Everything the notifier holds about me (accounts' export holds the rest)."""
    uid = user_id(user)
    vault = runtime.vault
    assert vault is not None
    async with runtime.pool.acquire() as conn:
        card = await conn.fetchrow("SELECT * FROM contacts WHERE user_id = $1", uid)
        replaced = await conn.fetch(
            "SELECT email, created_at FROM previous_addresses WHERE user_id = $1"
            " ORDER BY created_at",
            uid,
        )
        choices, emails, inbox, policies = [
            [dict(r) for r in await conn.fetch(sql, uid)]
            for sql in (_CHOICES, _EMAILS, _INBOX, _POLICIES)
        ]
    contact = None
    if card is not None:
        guardian, pending = card["guardian_email"], card["pending_email"]
        contact = {
            "email": await vault.open(uid, card["email"], purpose=EMAIL_PURPOSE),
            "name": await vault.open(uid, card["name"], purpose=NAME_PURPOSE),
            "guardian_email": None
            if guardian is None
            else await vault.open(uid, guardian, purpose=GUARDIAN_PURPOSE),
            "pending_email": None
            if pending is None
            else await vault.open(uid, pending, purpose=PENDING_PURPOSE),
            **{k: card[k] for k in ("locale", "age_band", "marketing_email",
                                    "tracking_opt_out", "active")},
        }  # fmt: skip
    return {
        "exported_at": datetime.now(UTC),
        "contact": contact,
        "email_choices": choices,
        "emails": emails,
        "inbox": inbox,
        "policy_notices": policies,
        "replaced_addresses": [
            {
                "email": await vault.open(uid, r["email"], purpose=EMAIL_PURPOSE),
                "kept_since": r["created_at"],
            }
            for r in replaced
        ],
    }
