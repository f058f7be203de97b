"""Erasures forwarded to the processors and partners a subject's data was disclosed to
(P-19, GDPR Art. 19): each recipient whose exports held it is asked, on
``accounts.recipient_erasures``, to erase what of the subject those exports held."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from services.accounts.context import emit
from shared.db.pool import Connection
from shared.events.catalogue.accounts import RecipientErasureRequested

#: The fields of a disclosed record a deleted device was part of.
DEVICE_FIELDS = ("device_models", "device_damage_states")

_DISCLOSED = """
SELECT recipient_id, array_agg(DISTINCT export_id ORDER BY export_id) AS exports
FROM disclosures
WHERE user_id = $1
  AND ($2::uuid IS NULL OR recipient_id = $2)
  AND (cardinality($3::text[]) = 0 OR fields && $3::text[])
GROUP BY recipient_id
ORDER BY recipient_id
"""


async def forward_to_recipients(
    conn: Connection,
    subject: UUID,
    request_id: UUID,
    reason: str,
    fields: Sequence[str] = (),
    recipient_id: UUID | None = None,
) -> int:
    """Ask every recipient (or the one given) whose exports held the subject (or, with
    ``fields``, any of those fields of it) to erase it; how many were asked."""
    rows = await conn.fetch(_DISCLOSED, subject, recipient_id, list(fields))
    for row in rows:
        forwarded = RecipientErasureRequested(
            recipient_id=row["recipient_id"],
            subject_id=subject,
            request_id=request_id,
            export_ids=tuple(row["exports"]),
            reason=reason,
            fields=tuple(fields),
        )
        await emit(conn, forwarded, subject)
    return len(rows)
