"""Accounts' reactions to other services' commands and stage changes.

``DeletionStageChanged`` to ``holds`` (deletion.stages): the grace period of a deletion
ended; its cancel window closes unless the user cancelled first (``cancel_window``).

``EraseSubject`` (deletion.commands): erase the subject's rows (or one item), tombstone
the contact card, publish the end of the subject's sessions (``SessionsRevoked``), and
answer ``SubjectErased`` with counts, in one transaction with the processed mark.
Erasing twice erases nothing more and answers again (zero counts).
Kept, anonymised (ids only): audit rows, disclosure log, deletion requests, and the
consent records of the recipients the subject's data was disclosed to (the proof that
each disclosure had consent). Invoices are kept without any id of the subject while
``financial_records`` is in the command's ``retain_categories`` (those whose period,
counted from their issue date, has already ended go at once); the release (the same
command without it) erases them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from uuid import UUID

from services.accounts import cancel_window, store
from services.accounts.cards import tombstone_card
from services.accounts.context import emit
from services.accounts.domain.invoices import DISCLOSURE_LOG, FINANCIAL_RECORDS
from services.accounts.invoices import (
    anonymise_invoices,
    erase_invoices,
    erase_spent_invoices,
    kept_invoices_until,
)
from services.accounts.recipients import DEVICE_FIELDS, forward_to_recipients
from services.accounts.throttling import address_change_key, reauth_key
from shared.bus import Delivery, Tombstone
from shared.db.pool import Connection
from shared.events.catalogue.accounts import (
    RecipientErasureRequested,
    RecipientErasureRequestedV1,
)
from shared.events.catalogue.deletion import (
    UNDER_LEGAL_HOLD,
    DeletionStageChanged,
    EraseSubject,
    SubjectErased,
)
from shared.tracing import traced
from shared.vault import Vault

STORE = "accounts"

# Rows of the subject, erased child tables first (the user row cascades the rest too,
# but counting each table tells the deletion service what went).
_ACCOUNT_TABLES: tuple[tuple[str, str], ...] = (
    # Keys of the user's POSTs, and operators' keys whose answer names one of the user's
    # requests (a reply): ids only, but an item's. Before the requests they name go.
    ("idempotency_keys",
     "DELETE FROM idempotency_keys WHERE principal = $1 OR answer->>'request_id' IN"
     " (SELECT id::text FROM requests WHERE user_id = $1"
     " UNION SELECT item_id::text FROM erasing_items WHERE user_id = $1)"),
    ("request_messages",
     "DELETE FROM request_messages WHERE request_id IN"
     " (SELECT id FROM requests WHERE user_id = $1)"),
    ("requests", "DELETE FROM requests WHERE user_id = $1"),
    ("devices", "DELETE FROM devices WHERE user_id = $1"),
    # Only consents to recipients never given the subject's data: the others are the
    # proof of those disclosures, kept with the disclosure log (_DISCLOSURE_LOG).
    ("consents",
     "DELETE FROM consents c WHERE c.user_id = $1 AND NOT EXISTS"
     " (SELECT 1 FROM disclosures d WHERE d.user_id = $1 AND d.recipient_id = c.recipient_id)"),
    ("policy_acceptances", "DELETE FROM policy_acceptances WHERE user_id = $1"),
    ("data_exports", "DELETE FROM data_exports WHERE user_id = $1"),
    ("action_tokens", "DELETE FROM action_tokens WHERE user_id = $1"),
    # A reset waiting for the row (no foreign key: migration 020): nothing to mail now.
    ("pending_resets", "DELETE FROM pending_resets WHERE user_id = $1"),
    ("erasing_items", "DELETE FROM erasing_items WHERE user_id = $1"),
    ("refresh_tokens",
     "DELETE FROM refresh_tokens WHERE session_id IN"
     " (SELECT id FROM sessions WHERE principal_id = $1)"),
    ("sessions", "DELETE FROM sessions WHERE principal_id = $1"),
    ("operator_set_addresses", "DELETE FROM operator_set_addresses WHERE user_id = $1"),
    ("users", "DELETE FROM users WHERE id = $1"),
)  # fmt: skip
_RETAINED: tuple[tuple[str, str], ...] = (
    ("audit_log", "SELECT count(*) FROM audit_log WHERE subject_id = $1"),
    ("disclosures", "SELECT count(*) FROM disclosures WHERE user_id = $1"),
    ("deletion_requests", "SELECT count(*) FROM deletion_requests WHERE user_id = $1"),
    ("consents", "SELECT count(*) FROM consents WHERE user_id = $1"),
)
# Kept while the disclosure_log category is (proof of disclosures, of the consent each
# was made under, and of the deletion), erased by the release that ends it. (The audit
# log is a hash chain: it is kept.)
_DISCLOSURE_LOG: tuple[tuple[str, str], ...] = (
    ("disclosures", "DELETE FROM disclosures WHERE user_id = $1"),
    ("consents", "DELETE FROM consents WHERE user_id = $1"),
    ("deletion_requests", "DELETE FROM deletion_requests WHERE user_id = $1"),
    ("recipient_erasures", "DELETE FROM recipient_erasures WHERE subject_id = $1"),
)
# Each recipient given the subject's data, told once (whichever command came first).
_TELL_RECIPIENTS = """
WITH disclosed AS (
    SELECT recipient_id, array_agg(DISTINCT export_id ORDER BY export_id) AS exports
    FROM disclosures WHERE user_id = $1 GROUP BY recipient_id
), told AS (
    INSERT INTO recipient_erasures (subject_id, recipient_id, request_id)
    SELECT $1, recipient_id, $2 FROM disclosed
    ON CONFLICT DO NOTHING
    RETURNING recipient_id
)
SELECT d.recipient_id, d.exports FROM disclosed d JOIN told t USING (recipient_id)
ORDER BY d.recipient_id
"""


def _count(status: str) -> int:
    return int(status.split()[-1])


async def _close_deletion_requests(conn: Connection, subject: UUID) -> None:
    """The deletions under way are done; the others keep their status and its time, the
    proof that a request was cancelled or never approved (P-15). Every reason goes: free
    text about the subject."""
    await conn.execute(
        "UPDATE deletion_requests SET reason = NULL,"
        " status = CASE WHEN status IN ('requested', 'confirmed') THEN 'erased' ELSE status END,"
        " updated_at = CASE WHEN status IN ('requested', 'confirmed') THEN now()"
        " ELSE updated_at END"
        " WHERE user_id = $1 AND (status IN ('requested', 'confirmed') OR reason IS NOT NULL)",
        subject,
    )


async def _tell_recipients(conn: Connection, command: EraseSubject) -> int:
    """Forward the erasure to every processor and partner the subject's data was
    disclosed to (P-19), before the disclosure log that names them can go."""
    rows = await conn.fetch(_TELL_RECIPIENTS, command.subject_id, command.request_id)
    for row in rows:
        exports = tuple(row["exports"])
        ids = {
            "recipient_id": row["recipient_id"],
            "subject_id": command.subject_id,
            "request_id": command.request_id,
            "export_ids": exports,
        }
        # Both versions, while connectors move to the second (see the event's docs).
        await emit(conn, RecipientErasureRequestedV1(**ids), command.subject_id)
        v2 = RecipientErasureRequested(**ids, reason="account_erased", fields=())
        await emit(conn, v2, command.subject_id)
    return len(rows)


async def _tell_recipients_of_device(conn: Connection, command: EraseSubject) -> int:
    """A deleted device: every recipient whose exports held the subject's device fields
    is asked to erase those fields (an export lists models, not devices by id)."""
    return await forward_to_recipients(
        conn, command.subject_id, command.request_id, "item_deleted", DEVICE_FIELDS
    )


async def _erase_set_aside(conn: Connection, command: EraseSubject) -> int:
    """The deleted item's rows, kept out of sight until this command (P-13)."""
    return _count(
        await conn.execute(
            "DELETE FROM erasing_items WHERE item_id = $1 AND user_id = $2",
            command.item_id,
            command.subject_id,
        )
    )


# The message ids of a request's thread, live or set aside (store.set_aside_request).
_THREAD_OF = """
SELECT coalesce(array_agg(id), '{}') FROM (
    SELECT m.id FROM request_messages m JOIN requests r ON r.id = m.request_id
    WHERE r.id = $1 AND r.user_id = $2
    UNION
    SELECT (message->>'id')::uuid FROM erasing_items e,
        jsonb_array_elements(e.rows->'messages') AS message
    WHERE e.item_id = $1 AND e.user_id = $2 AND e.scope = 'request'
) AS thread
"""


async def _forget_answers_naming(
    conn: Connection, subject: UUID, ids: Sequence[UUID | None]
) -> int:
    """Idempotency-Keys whose recorded answer names one of ``ids``: the subject's item a
    POST of theirs made (``id``), or one an operator replied to (``request_id``). Kept a
    day for retries, such an answer would outlive the item, and the item's verifier
    finds its id there (P-12)."""
    return _count(
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE (principal = $2 AND answer->>'id' = ANY($1))"
            " OR answer->>'request_id' = ANY($1)",
            [str(i) for i in ids if i is not None],
            subject,
        )
    )


async def erase_subject(conn: Connection, vault: Vault, command: EraseSubject) -> SubjectErased:
    subject = command.subject_id
    erased: dict[str, int] = {}
    retained: dict[str, int] = {}
    retained_until: dict[str, date] = {}
    if command.scope == "device":
        # The user's row first (the order every writer of the user's rows keeps), as an
        # export holds it: an export that read the device before it was set aside has
        # then committed its disclosure, and the forwarding below sees it.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", subject)
        status = await conn.execute(
            "DELETE FROM devices WHERE id = $1 AND user_id = $2", command.item_id, subject
        )
        erased["devices"] = _count(status)
        erased["erasing_items"] = await _erase_set_aside(conn, command)
        erased["idempotency_keys"] = await _forget_answers_naming(conn, subject, [command.item_id])
        # Only the command that erased it forwards it: a resend finds nothing, tells no one.
        if erased["devices"] or erased["erasing_items"]:
            erased["forwarded_to_recipients"] = await _tell_recipients_of_device(conn, command)
    elif command.scope == "request":
        # The request, and the messages of its thread (a key's answer names a message).
        thread = await conn.fetchval(_THREAD_OF, command.item_id, subject)
        named = [command.item_id, *thread]
        erased["idempotency_keys"] = await _forget_answers_naming(conn, subject, named)
        messages = await conn.execute(
            "DELETE FROM request_messages WHERE request_id IN"
            " (SELECT id FROM requests WHERE id = $1 AND user_id = $2)",
            command.item_id,
            subject,
        )
        status = await conn.execute(
            "DELETE FROM requests WHERE id = $1 AND user_id = $2", command.item_id, subject
        )
        erased.update(request_messages=_count(messages), requests=_count(status))
        erased["erasing_items"] = await _erase_set_aside(conn, command)
    else:
        # Locked first: an invoice recorded meanwhile waits, then finds no user.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", subject)
        erased["forwarded_to_recipients"] = await _tell_recipients(conn, command)
        if FINANCIAL_RECORDS in command.retain_categories:
            if UNDER_LEGAL_HOLD not in command.retain_categories:
                spent = await erase_spent_invoices(conn, subject)
                if spent:  # named only when some went (the kept: retained_anonymised)
                    erased["invoices"] = spent
            retained["invoices"] = await anonymise_invoices(conn, vault, subject)
            until = await kept_invoices_until(conn, vault, subject)
            if until is not None:  # the release need not wait a whole period more
                retained_until[FINANCIAL_RECORDS] = until
        else:
            erased["invoices"] = await erase_invoices(conn, vault, subject)
        # Deleting the sessions ends them here only: the other APIs check tokens against
        # the sessions topic, so the end is published like any other (same transaction).
        await store.revoke_sessions_of(conn, subject, "principal-gone")
        for table, sql in _ACCOUNT_TABLES:
            erased[table] = _count(await conn.execute(sql, subject))
        # Counters keyed by a fingerprint of the id (re-entered passwords, address changes)
        # guard an account that is gone: nothing left to guard, only a trace of its days.
        erased["login_throttle"] = _count(
            await conn.execute(
                "DELETE FROM login_throttle WHERE key = ANY($1::bytea[])",
                [reauth_key(vault, subject), address_change_key(vault, subject)],
            )
        )
        await _close_deletion_requests(conn, subject)
        # The card leaves the compacted topic whatever was left here (idempotent).
        await tombstone_card(conn, subject)
        erased["contact_card"] = 1
    if command.scope == "account":
        released: set[str] = set()
        if DISCLOSURE_LOG not in command.retain_categories:
            for table, sql in _DISCLOSURE_LOG:
                # Added to what went with the account (consents that proved nothing).
                erased[table] = erased.get(table, 0) + _count(await conn.execute(sql, subject))
                released.add(table)
        for table, sql in _RETAINED:
            if table not in released:
                retained[table] = int(await conn.fetchval(sql, subject))
    receipt = SubjectErased(
        request_id=command.request_id,
        subject_id=subject,
        store=STORE,
        erased=erased,
        retained_anonymised=retained,
        erased_at=datetime.now(UTC),
        retained_until=retained_until,
    )
    await emit(conn, receipt, subject)
    return receipt


Handler = Callable[[Connection, Sequence[Delivery | Tombstone]], Awaitable[None]]


def handler(vault: Vault) -> Handler:
    """The worker's handler: the events it knows, in order; others are not for us."""

    async def handle(conn: Connection, items: Sequence[Delivery | Tombstone]) -> None:
        for item in traced(items):
            if not isinstance(item, Delivery):
                continue
            if isinstance(item.event, EraseSubject):
                await erase_subject(conn, vault, item.event)
            elif isinstance(item.event, DeletionStageChanged):
                await cancel_window.close(conn, item.event)

    return handle
