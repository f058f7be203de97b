"""The notifier's SQL (its own database only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from services.notifier import holds
from services.notifier.domain.rules import audience_sql_filter
from services.notifier.domain.templates import SECRET_LINKS, SECRET_PARAMS
from shared.db.pool import Connection
from shared.events.catalogue.notifier import NoticeDelivered
from shared.events.topics import NOTIFIER_DELIVERIES

WORK_CHANNEL = "notifier_work"  # wakes the worker's loops (sender, planner, outcomes)
# Payload: a notice id with new inbox items (SSE), followed by " <user id>" when the one
# new item is that user's (a late card): services/notifier/stream.py.
INBOX_CHANNEL = "notifier_inbox"
EMAIL_CHANGED = "email_changed"  # the template told to the address an email change replaced
# Notices for all users that every account existing when they went out must get, its
# card late or not (services/notifier/late_contacts.py): a breach, a policy change.
LATE_CARD_CATEGORIES = ("account_security", "policy_change")


# -- contacts --------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedContact:
    user_id: UUID
    email_index: bytes
    email: bytes
    name: bytes
    guardian_index: bytes | None
    guardian_email: bytes | None
    locale: str
    age_band: str
    marketing_email: bool
    tracking_opt_out: bool
    active: bool
    card_changed_at: datetime | None = None
    pending_index: bytes | None = None
    pending_email: bytes | None = None
    pending_change: UUID | None = None


# A person who asked us (by email, recorded by an operator) to stop ALL email asked it of
# themselves, not of one address: their next address is suppressed too. Only a request
# recorded since the account took the address (email_since) is theirs: an address keeps
# its suppression after its holder's erasure or move, and whoever takes it next asked
# nothing. The request is recorded again for the new address, under its reference, so it
# follows them from there too (the new address may have had a suppression of its own).
_CARRY_OPERATOR_SUPPRESSION = """
WITH requests AS (
    SELECT o.id, o.operator_id, o.request_reference
    FROM contacts c
    JOIN suppressions s
      ON s.email_index = c.email_index AND s.category = 'all' AND s.source = 'operator'
    JOIN operator_suppressions o
      ON o.email_index = c.email_index AND o.created_at >= c.email_since
    WHERE c.user_id = $1 AND c.email_index <> $2
      -- Never from an older card (a replayed or re-read record): as the card's upsert.
      AND (c.card_changed_at IS NULL OR $3::timestamptz IS NULL
           OR $3::timestamptz >= c.card_changed_at)
      -- Nor from a card read after the account's erasure began: as the card's upsert.
      AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.subject_id = $1 AND e.whole_account)
), recorded AS (
    INSERT INTO operator_suppressions (email_index, operator_id, request_reference,
                                       carried_from)
    SELECT $2, operator_id, request_reference, id FROM requests
)
INSERT INTO suppressions (email_index, category, source)
SELECT $2, 'all', 'operator' WHERE EXISTS (SELECT 1 FROM requests)
ON CONFLICT (email_index, category) DO UPDATE SET source = 'operator', asserted_at = now()
"""


async def account_erasure_began(conn: Connection, user_id: UUID) -> bool:
    """Whether the account's erasure here began (confirming its final email) or is done.

    A card read after that is refused (:func:`upsert_contact`): a dead letter replayed
    after the tombstone, or a record redelivered late. While the erasure confirms, the
    contact it began with (its address for the final email only) is kept as it is; once
    done, nothing of the subject's may come back.
    """
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM erasures WHERE subject_id = $1 AND whole_account)",
            user_id,
        )
    )


async def upsert_contact(conn: Connection, c: SealedContact) -> None:
    """Store the card, unless the account's erasure here began (any state): the card
    then changes nothing, written or not (see :func:`account_erasure_began`; the contacts
    handler skips such a card before this, the check here guards every caller)."""
    await conn.execute(_CARRY_OPERATOR_SUPPRESSION, c.user_id, c.email_index, c.card_changed_at)
    await conn.execute(
        """
        INSERT INTO contacts (user_id, email_index, email, name, guardian_index, guardian_email,
                              locale, age_band, marketing_email, tracking_opt_out, active,
                              card_changed_at, pending_index, pending_email, pending_change,
                              known_since, email_since)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
               LEAST(coalesce($12, now()), now()), now()
        -- Not even 'confirming': its final email goes to the contact held when it began
        -- (a row would otherwise lose erase_pending, or come back after the erasure).
        WHERE NOT EXISTS (SELECT 1 FROM erasures e WHERE e.subject_id = $1 AND e.whole_account)
        ON CONFLICT (user_id) DO UPDATE SET
            known_since = LEAST(contacts.known_since, EXCLUDED.known_since),
            email_since = CASE WHEN contacts.email_index = EXCLUDED.email_index
                               THEN contacts.email_since ELSE EXCLUDED.email_since END,
            email_index = EXCLUDED.email_index, email = EXCLUDED.email, name = EXCLUDED.name,
            guardian_index = EXCLUDED.guardian_index, guardian_email = EXCLUDED.guardian_email,
            pending_index = EXCLUDED.pending_index, pending_email = EXCLUDED.pending_email,
            pending_change = EXCLUDED.pending_change,
            locale = EXCLUDED.locale, age_band = EXCLUDED.age_band,
            marketing_email = EXCLUDED.marketing_email,
            tracking_opt_out = EXCLUDED.tracking_opt_out, active = EXCLUDED.active,
            card_changed_at = EXCLUDED.card_changed_at, erase_pending = false, updated_at = now()
        -- Never back to an older card (a replayed or re-read record): cards are dated.
        WHERE contacts.card_changed_at IS NULL OR EXCLUDED.card_changed_at IS NULL
           OR EXCLUDED.card_changed_at >= contacts.card_changed_at
        """,
        c.user_id,
        c.email_index,
        c.email,
        c.name,
        c.guardian_index,
        c.guardian_email,
        c.locale,
        c.age_band,
        c.marketing_email,
        c.tracking_opt_out,
        c.active,
        c.card_changed_at,
        c.pending_index,
        c.pending_email,
        c.pending_change,
    )
    # Emails that waited for this card go once it is committed (the sender's
    # wake_for_cards, rung by this).
    await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)


@dataclass(frozen=True)
class HeldAddress:
    email_index: bytes
    email: bytes  # sealed
    card_changed_at: datetime | None


async def contact_address(conn: Connection, user_id: UUID) -> HeldAddress | None:
    """The address of the card held for the user (None without one), locked: the card
    that replaces it is compared with it in the same transaction."""
    row = await conn.fetchrow(
        "SELECT email_index, email, card_changed_at FROM contacts WHERE user_id = $1 FOR UPDATE",
        user_id,
    )
    return None if row is None else HeldAddress(**dict(row))


async def keep_previous_address(
    conn: Connection, notice_id: UUID, user_id: UUID, address: HeldAddress
) -> None:
    """Keep a replaced address for the notice that tells it of the change."""
    await conn.execute(
        "INSERT INTO previous_addresses (notice_id, user_id, email_index, email)"
        " VALUES ($1, $2, $3, $4)",
        notice_id,
        user_id,
        address.email_index,
        address.email,
    )


REPLACED_ADDRESS_DAYS = 30  # the longest a replaced address whose email failed is kept


async def forget_replaced_addresses(conn: Connection) -> int | None:
    """Drop replaced addresses kept past REPLACED_ADDRESS_DAYS (their email failed and
    was not replayed in time); None when there were none."""
    status = await conn.execute(
        "DELETE FROM previous_addresses WHERE created_at < now() - make_interval(days => $1)",
        REPLACED_ADDRESS_DAYS,
    )
    return int(status.split()[-1]) or None


async def erase_contact_on_tombstone(conn: Connection, user_id: UUID) -> None:
    """Drop the contact once the account's erasure here is done; until then keep its
    address for the erasure's own email only (``erase_pending``: nothing else goes to it).

    Accounts tombstones the card when the deletion service tells it to erase, and tells
    the notifier at the same time, on another topic: the tombstone may come first, and
    the email that confirms the erasure still needs the address. The erasure's end drops
    the contact; :func:`forget_tombstoned_contacts` drops one no erasure came for.
    """
    done = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM erasures WHERE subject_id = $1 AND whole_account"
        " AND state = 'done')",
        user_id,
    )
    if done:
        await conn.execute("DELETE FROM contacts WHERE user_id = $1", user_id)
    else:
        await conn.execute(
            "UPDATE contacts SET erase_pending = true, updated_at = now() WHERE user_id = $1",
            user_id,
        )


#: How long a tombstoned contact waits for its erasure command. The command comes on
#: another topic, read by another consumer group: it may trail the tombstone by hours
#: (that group stalled, the command dead-lettered and replayed) or days (resent after the
#: deletion service's store timeout, three days by default, by an operator's retry). The
#: address serves the erasure's own email only meanwhile; dropped sooner, the user would
#: get no final email, the one thing that tells them the stages left (P-16).
TOMBSTONED_CONTACT_KEPT = timedelta(days=7)


async def forget_tombstoned_contacts(conn: Connection) -> int:
    """Drop contacts tombstoned more than ``TOMBSTONED_CONTACT_KEPT`` ago that no erasure
    email waits for (their erasure command never came, or came for another store only).
    One given up on for now waits too: its erasure is still confirming, kept for a replay."""
    status = await conn.execute(
        "DELETE FROM contacts c WHERE c.erase_pending AND c.updated_at < now() - $1::interval"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.user_id = c.user_id"
        " AND d.erasure_request IS NOT NULL AND (d.status IN ('pending', 'sending')"
        "  OR (d.status = 'dead' AND EXISTS (SELECT 1 FROM erasures e"
        "   WHERE e.request_id = d.erasure_request AND e.state = 'confirming'))))",
        TOMBSTONED_CONTACT_KEPT,
    )
    return int(status.split()[-1])


# -- notices and fan-out -----------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    notice_id: UUID
    template: str
    category: str
    audience: str
    params: dict[str, str]
    channels: tuple[str, ...]
    recipient: str
    pinned: bool
    source: str
    send_at: datetime | None = None
    user_ids: tuple[UUID, ...] = ()
    erasure_request: UUID | None = None
    card_changed_at: datetime | None = None  # the recipient's card must be this new
    extra: dict[str, Any] = field(default_factory=dict)


async def insert_notice(conn: Connection, n: Notice, *, scheduled: bool) -> bool:
    """Record a notice once; False if its id was seen before (nothing more to do)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO notices (notice_id, template, category, audience, listed, params, channels,
                             recipient, pinned, source, send_at, status, card_changed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (notice_id) DO NOTHING
        RETURNING true
        """,
        n.notice_id,
        n.template,
        n.category,
        n.audience,
        list(n.user_ids) if scheduled else None,
        n.params,
        list(n.channels),
        n.recipient,
        n.pinned,
        n.source,
        n.send_at,
        "scheduled" if scheduled else "fanning_out",
        n.card_changed_at,
    )
    return bool(inserted)


async def fan_out(conn: Connection, n: Notice) -> int:
    """Create the notice's inbox items (and email deliveries) for its audience.

    In-site items are written at once, in bulk (COPY, or one INSERT ... SELECT for
    ``all``): they are the fast path of a breach notice. When the notice also goes by
    email, the email deliveries are planned afterwards from those rows, in chunks
    (:func:`plan_email_chunk`), so the in-site fan-out does not wait for them.
    """
    inbox = "inbox" in n.channels and n.recipient == "user"
    email = "email" in n.channels
    table, columns = (
        ("inbox_items", ("user_id", "notice_id", "pinned"))
        if inbox
        else ("deliveries", ("user_id", "notice_id", "erasure_request"))
    )
    extra = n.pinned if inbox else n.erasure_request
    cast = "boolean" if inbox else "uuid"
    count = 0
    if inbox or email:
        condition = audience_sql_filter(n.category)
        if n.audience == "all":
            if n.category in LATE_CARD_CATEGORIES:
                # No card is stored while this runs, nor between its statement and its
                # commit: a card comes either before (and is fanned out to here) or
                # after (and finds this notice fanned out: late_contacts.py).
                await conn.execute("LOCK TABLE contacts IN SHARE MODE")
            status = await conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - constants
                f" SELECT c.user_id, $1, $2::{cast} FROM contacts c"
                f" WHERE c.active AND NOT c.erase_pending AND {condition}",
                n.notice_id,
                extra,
            )
            count = int(status.split()[-1])
        elif n.category == "marketing" and inbox:
            # In-site advertising follows the marketing rule at once; email is decided
            # per recipient at send time (a card may still be on its way).
            status = await conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - constants
                f" SELECT c.user_id, $1, $2::{cast} FROM contacts c"
                f" WHERE c.user_id = ANY($3::uuid[]) AND NOT c.erase_pending AND {condition}",
                n.notice_id,
                extra,
                list(dict.fromkeys(n.user_ids)),
            )
            count = int(status.split()[-1])
        else:
            listed = list(dict.fromkeys(n.user_ids))
            gone = await erased_accounts(conn, listed)  # a late notice: nothing for them
            records = [(u, n.notice_id, extra) for u in listed if u not in gone]
            await conn.copy_records_to_table(table, records=records, columns=columns)
            count = len(records)
    # The clock's time, not the transaction's start (the items' written_xid, not this
    # time, is what a lost listener of the live inbox catches up by: stream.py).
    await conn.execute(
        """
        UPDATE notices SET status = 'fanned_out', fanned_out_at = clock_timestamp(), listed = NULL,
               recipients = $2, email_planned = NOT $3, inbox_outcomes_pending = $4
        WHERE notice_id = $1
        """,
        n.notice_id,
        count,
        # Emails are planned from the inbox items: none written, none to plan (a card
        # that comes late is given its email by late_contacts.py, not by the planner).
        inbox and email and count > 0,
        inbox and count > 0,
    )
    if inbox:
        await conn.execute("SELECT pg_notify($1, $2)", INBOX_CHANNEL, str(n.notice_id))
    await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
    return count


def notice_from_row(row: Any) -> Notice:
    return Notice(
        notice_id=row["notice_id"],
        template=row["template"],
        category=row["category"],
        audience=row["audience"],
        params=dict(row["params"]),
        channels=tuple(row["channels"]),
        recipient=row["recipient"],
        pinned=row["pinned"],
        source=row["source"],
        send_at=row["send_at"],
        user_ids=tuple(row["listed"] or ()),
    )


async def claim_scheduled(conn: Connection, limit: int = 5) -> list[Notice]:
    """Due scheduled notices, locked: one for all users alone, else up to ``limit``.

    A notice for all users may wait for the contacts table (:func:`fan_out`). Holding
    listed notices meanwhile would deadlock with an erasure that wrote contacts and
    then takes the subject out of those notices' lists."""
    due = (
        f"SELECT * FROM notices WHERE {holds.NOT_HELD}"  # noqa: S608
        " AND status = 'scheduled' AND send_at <= now() AND {audience}"
        " ORDER BY send_at LIMIT $1 FOR UPDATE SKIP LOCKED"
    )
    rows = await conn.fetch(due.format(audience="audience = 'all'"), 1)
    if not rows:
        rows = await conn.fetch(due.format(audience="audience <> 'all'"), limit)
    return [notice_from_row(r) for r in rows]


async def put_off(conn: Connection, notice_id: UUID, delay: timedelta) -> None:
    """A claimed scheduled notice comes due again ``delay`` from now."""
    await conn.execute(
        "UPDATE notices SET send_at = now() + $2 WHERE notice_id = $1", notice_id, delay
    )


async def plan_email_chunk(conn: Connection, chunk: int) -> int | None:
    """Plan the next chunk of email deliveries of one notice; None if none is waiting.

    Returns the deliveries planned: 0 too when the notice's work failed and it was held.
    """
    row = await conn.fetchrow(
        f"SELECT notice_id, email_cursor FROM notices WHERE {holds.NOT_HELD}"  # noqa: S608
        " AND NOT email_planned ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    if row is None:
        return None
    notice_id, cursor = row["notice_id"], row["email_cursor"]
    planned = await holds.isolated(
        conn, "email-planner", notice_id, partial(_plan_chunk, conn, notice_id, cursor, chunk)
    )
    return planned or 0


async def _plan_chunk(conn: Connection, notice_id: UUID, cursor: int | None, chunk: int) -> int:
    if cursor is None:  # the notice's first item, by the (notice_id, id) index
        first = await conn.fetchval(
            "SELECT min(id) FROM inbox_items WHERE notice_id = $1", notice_id
        )
        cursor = (first or 1) - 1
    planned = await conn.fetchrow(
        """
        WITH batch AS (
            SELECT id, user_id FROM inbox_items
            WHERE id > $2 AND notice_id = $1
            ORDER BY id LIMIT $3
        ), planned AS (
            INSERT INTO deliveries (notice_id, user_id)
            SELECT $1, user_id FROM batch ON CONFLICT DO NOTHING
        )
        SELECT count(*) AS n, max(id) AS last FROM batch
        """,
        notice_id,
        cursor,
        chunk,
    )
    assert planned is not None
    await conn.execute(
        "UPDATE notices SET email_cursor = coalesce($2::bigint, $4::bigint), email_planned = $3"
        " WHERE notice_id = $1",
        notice_id,
        planned["last"],
        planned["n"] < chunk,
        cursor,
    )
    await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
    return int(planned["n"])


_INBOX_OUTCOMES = """
INSERT INTO bus_outbox (topic, key, value, headers, event_id)
SELECT $2, convert_to(i.user_id::text, 'UTF8'),
       convert_to(jsonb_build_object(
           'specversion', '1.0', 'id', e.id, 'type', $3::text, 'source', 'notifier',
           'time', now(), 'subject', i.user_id::text, 'datacontenttype', 'application/json',
           'data', jsonb_build_object('notice_id', $1::uuid, 'user_id', i.user_id,
                                      'channel', 'inbox', 'outcome', 'sent')
       )::text, 'UTF8'),
       jsonb_build_object('ce_id', e.id::text, 'ce_type', $3::text),
       e.id
FROM inbox_items i CROSS JOIN LATERAL (SELECT gen_random_uuid() AS id) e
WHERE i.notice_id = $1
"""


async def queue_inbox_outcomes(conn: Connection) -> int | None:
    """Queue one NoticeDelivered per inbox item of one fanned-out notice (in bulk, in SQL).

    Returns the outcomes queued (0 too when the notice's work failed and it was held), or
    None if no notice is waiting.
    """
    notice_id = await conn.fetchval(
        f"SELECT notice_id FROM notices WHERE {holds.NOT_HELD}"  # noqa: S608
        " AND inbox_outcomes_pending ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    if notice_id is None:
        return None
    queued = await holds.isolated(
        conn, "inbox-outcomes", notice_id, partial(_queue_inbox_outcomes, conn, notice_id)
    )
    return queued or 0


async def _queue_inbox_outcomes(conn: Connection, notice_id: UUID) -> int:
    status = await conn.execute(
        _INBOX_OUTCOMES, notice_id, NOTIFIER_DELIVERIES.name, NoticeDelivered.type_name()
    )
    await conn.execute(
        "UPDATE notices SET inbox_outcomes_pending = false WHERE notice_id = $1", notice_id
    )
    return int(status.split()[-1])


async def record_policy_notices(conn: Connection, notice_id: UUID, version: str) -> int:
    status = await conn.execute(
        "INSERT INTO policy_notices (user_id, policy_version, notice_id)"
        " SELECT user_id, $2, $1 FROM inbox_items WHERE notice_id = $1 ON CONFLICT DO NOTHING",
        notice_id,
        version,
    )
    return int(status.split()[-1])


# -- email deliveries ------------------------------------------------------------------

_CLAIM = """
WITH due AS (
    SELECT id FROM deliveries
    WHERE status IN ('pending', 'sending') AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
    SET status = 'sending', next_attempt_at = now() + make_interval(secs => $2)
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.notice_id, d.user_id, d.attempts, d.waiting_since, d.erasure_request,
              d.next_attempt_at AS lease_until, d.handed_over_at IS NOT NULL AS in_doubt
)
SELECT cl.*, n.template, n.category, n.params, n.recipient,
       c.user_id IS NOT NULL
           AND (n.card_changed_at IS NULL OR c.card_changed_at >= n.card_changed_at)
           AS has_contact,
       CASE n.recipient WHEN 'previous' THEN p.email
                        WHEN 'pending' THEN c.pending_email
                        ELSE c.email END AS email,
       c.name, c.guardian_email,
       a.address_index,
       n.recipient = 'previous' AND p.email_index = c.email_index AS address_current,
       -- A link for a new address: the contact still holds the change it confirms.
       n.recipient = 'pending' AND c.pending_change::text = n.params->>'change'
           AS pending_current,
       c.age_band, c.marketing_email, c.tracking_opt_out, c.active,
       -- Tombstoned, kept only for the erasure's own email: nothing else goes to it.
       COALESCE(c.erase_pending, false) AND cl.erasure_request IS NULL AS erased,
       EXISTS (
           SELECT 1 FROM suppressions s
           WHERE s.email_index = a.address_index AND s.category IN (n.category, 'all')
       ) AS suppressed
FROM claimed cl
JOIN notices n ON n.notice_id = cl.notice_id
LEFT JOIN contacts c ON c.user_id = cl.user_id
-- The address told of an email change (recipient 'previous'): the one it replaced.
LEFT JOIN previous_addresses p ON n.recipient = 'previous' AND p.notice_id = cl.notice_id
CROSS JOIN LATERAL (
    SELECT CASE n.recipient WHEN 'guardian' THEN c.guardian_index
                            WHEN 'previous' THEN p.email_index
                            WHEN 'pending' THEN c.pending_index
                            ELSE c.email_index END AS address_index
) a
"""


async def claim_deliveries(conn: Connection, limit: int, lease_seconds: float) -> list[Any]:
    """Lease due deliveries (crashed senders' leases expire and are claimed again).

    A row's ``lease_until`` is its lease: only the holder can hand it over. ``in_doubt``
    rows were handed to the SMTP server by a sender whose lease ran out before it
    recorded the answer; they must not be sent again.
    """
    return list(await conn.fetch(_CLAIM, limit, lease_seconds))


class LeaseLost(Exception):
    """The delivery's lease expired and it may be another sender's now, or its address
    unsubscribed since it was leased: do not send (see :func:`hand_over`)."""


@dataclass(frozen=True)
class Lease:
    """A leased delivery about to be handed over, and what its email goes to."""

    delivery_id: int
    lease_until: datetime
    address_index: bytes  # the blind index of the address the email is addressed to
    category: str


# Suppressions, and for marketing the card's own opt-outs (consent withdrawn in the
# account, tracking opt-out, an age band that rules marketing out, an inactive or
# erased account), are checked again here, not only at lease time: an email may wait in
# the send queue, or for a send slot, while its address unsubscribes or its account
# opts out (P-32, P-25, P-26). One committed after this statement began is not seen:
# that email was handed over first.
_HAND_OVER = f"""
UPDATE deliveries d SET handed_over_at = now()
FROM unnest($1::bigint[], $2::timestamptz[], $3::bytea[], $4::text[])
     AS u(id, lease_until, address_index, category)
WHERE d.id = u.id AND d.status = 'sending' AND d.next_attempt_at = u.lease_until
  AND d.next_attempt_at > now() + make_interval(secs => $5)
  AND d.handed_over_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM suppressions s
      WHERE s.email_index = u.address_index AND s.category IN (u.category, 'all')
  )
  AND (u.category <> 'marketing' OR EXISTS (
      SELECT 1 FROM contacts c
      WHERE c.user_id = d.user_id AND c.active AND NOT c.erase_pending
        AND {audience_sql_filter("marketing")}
  ))
RETURNING d.id, d.next_attempt_at AS lease_until
"""  # noqa: S608 - constants


async def hand_over(
    conn: Connection, leases: Sequence[Lease], margin_seconds: float = 0.0
) -> set[tuple[int, datetime]]:
    """Mark deliveries handed to the SMTP server; committed before their DATA is sent.

    Returns the leases marked, as (id, lease_until): those whose sender still holds the
    lease it was given, for ``margin_seconds`` more at least, and whose address has not
    unsubscribed from the email's category (or from all email) since, nor, for marketing,
    its account opted out (or became one never marketed to) since. The lease, not the
    id alone: a row leased again by the same process (its first lease ran out while
    queued) may be in one round under both, and only the newer may send. Any other must
    not be sent: it stays leased, unmarked, until its lease ends, and is then leased and
    decided again (a suppressed one is recorded as such).
    """
    rows = await conn.fetch(
        _HAND_OVER,
        [lease.delivery_id for lease in leases],
        [lease.lease_until for lease in leases],
        [lease.address_index for lease in leases],
        [lease.category for lease in leases],
        margin_seconds,
    )
    return {(r["id"], r["lease_until"]) for r in rows}


@dataclass(frozen=True)
class Result:
    """What became of one claimed delivery."""

    delivery_id: int
    notice_id: UUID
    user_id: UUID
    status: str  # pending (retry later) | done | dead
    # The lease the outcome was reached under: recorded only while no other sender has
    # leased the delivery since (a stalled sender's late answer must not reopen it).
    lease_until: datetime
    outcome: str | None = None  # sent | suppressed | refused | failed (final ones)
    reason: str | None = None
    delay_seconds: float = 0.0
    smtp_attempted: bool = False
    waiting_for_contact: bool = False
    in_doubt: bool = False  # the server may have it: never replayed in bulk
    # Given up on for now, not for good: the server was away all the while, or may have
    # it (in doubt). An operator's replay can still send it.
    replayable: bool = False
    erasure_request: UUID | None = None
    template: str = ""
    params: dict[str, str] = field(default_factory=dict)


_RECORD = """
UPDATE deliveries d
SET status = u.status, outcome = u.outcome, reason = u.reason,
    attempts = d.attempts + u.inc,
    next_attempt_at = now() + make_interval(secs => u.delay),
    waiting_since = CASE WHEN u.waiting THEN coalesce(d.waiting_since, now()) END,
    finished_at = CASE WHEN u.status IN ('done', 'dead') THEN now() END,
    handed_over_at = CASE WHEN u.status = 'pending' THEN NULL ELSE d.handed_over_at END,
    in_doubt = u.in_doubt
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::float8[],
            $7::bool[], $8::bool[], $9::timestamptz[])
     AS u(id, status, outcome, reason, inc, delay, waiting, in_doubt, lease_until)
WHERE d.id = u.id AND d.status = 'sending'
  AND d.next_attempt_at = u.lease_until
RETURNING d.id
"""


async def record_results(conn: Connection, results: Sequence[Result]) -> list[Result]:
    """Record outcomes; returns those recorded (not those whose lease another sender took)."""
    rows = await conn.fetch(
        _RECORD,
        [r.delivery_id for r in results],
        [r.status for r in results],
        [r.outcome for r in results],
        [r.reason for r in results],
        [1 if r.smtp_attempted else 0 for r in results],
        [r.delay_seconds for r in results],
        [r.waiting_for_contact for r in results],
        [r.in_doubt for r in results],
        [r.lease_until for r in results],
    )
    mine = {r["id"] for r in rows}
    results = [r for r in results if r.delivery_id in mine]
    if any(r.waiting_for_contact for r in results):
        # Its card may have been committed since it was leased, when it found nothing
        # to wake: the sender looks once this is committed (wake_for_cards).
        await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
    spent = [r.notice_id for r in results if r.template in SECRET_LINKS and r.status == "done"]
    if spent:  # the link works for whoever reads it: gone once its one email went
        await conn.execute(
            "UPDATE notices SET params = params - $2::text[]"
            " WHERE notice_id = ANY($1::uuid[]) AND params ?| $2::text[]",
            spent,
            list(SECRET_PARAMS),
        )
    told = [r.notice_id for r in results if r.template == EMAIL_CHANGED and r.status == "done"]
    if told:  # kept for this one email only (a dead one keeps it, for a replay)
        await conn.execute(
            "DELETE FROM previous_addresses p USING deliveries d"
            " WHERE p.notice_id = ANY($1::uuid[]) AND d.notice_id = p.notice_id"
            " AND d.status = 'done'",
            told,
        )
    policy = [
        (r.user_id, r.params.get("policy_version", ""))
        for r in results
        if r.template == "policy_change" and r.outcome == "sent"
    ]
    if policy:
        await conn.execute(
            "UPDATE policy_notices p SET emailed_at = now()"
            " FROM unnest($1::uuid[], $2::text[]) AS u(user_id, version)"
            " WHERE p.user_id = u.user_id AND p.policy_version = u.version",
            [u for u, _ in policy],
            [v for _, v in policy],
        )
    return results


# The claim's has_contact: a card, and as new as the notice needs (an older one would
# only be leased, found wanting and put back to wait, again and again).
_WAKE_FOR_CARDS = """
WITH woken AS (
    SELECT d.id FROM deliveries d
    JOIN notices n ON n.notice_id = d.notice_id
    JOIN contacts c ON c.user_id = d.user_id
    WHERE d.status = 'pending' AND d.waiting_since IS NOT NULL AND d.next_attempt_at > now()
      AND (n.card_changed_at IS NULL OR c.card_changed_at >= n.card_changed_at)
    ORDER BY d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d SET next_attempt_at = now() FROM woken WHERE d.id = woken.id
"""


async def wake_for_cards(conn: Connection, limit: int) -> int:
    """Emails waiting for their contact card whose card has come: due now. Returns how
    many (at most ``limit``).

    Run after each card's commit and each recorded wait (both notify
    :data:`WORK_CHANNEL`), in a transaction of its own: only then does it see both. A
    card committed while its email was leased, and a wait recorded by a transaction
    that began before the card's commit, each miss the other; whichever commits last is
    followed by this, which sees the two.
    """
    status = await conn.execute(_WAKE_FOR_CARDS, limit)
    return int(status.split()[-1])


async def replay_dead(
    conn: Connection, *, notice_id: UUID | None = None, delivery_ids: Sequence[int] = ()
) -> int:
    """Dead letters back to pending (after the cause was fixed): the replay command.

    Deliveries in doubt (the mail server may have them) are replayed only when named by
    id, never in bulk: a replay of every dead letter after an outage must not mail
    anyone twice.
    """
    status = await conn.execute(
        """
        UPDATE deliveries SET status = 'pending', outcome = NULL, reason = NULL, attempts = 0,
               waiting_since = NULL, next_attempt_at = now(), finished_at = NULL,
               handed_over_at = NULL, in_doubt = false
        WHERE status = 'dead' AND ($1::uuid IS NULL OR notice_id = $1)
          AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
          AND (cardinality($2::bigint[]) > 0 OR NOT in_doubt)
        """,
        notice_id,
        list(delivery_ids),
    )
    await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
    return int(status.split()[-1])


# -- the send-rate limit per SMTP server -------------------------------------------------

# One statement, so a block of slots costs one round trip. FOR UPDATE serialises the
# workers on the server's row; a clock read before the lock wait only makes the grant
# smaller (conservative), never larger. ``now - start`` comes first: epoch seconds are
# ~1.8e9, where a double cannot hold a nanosecond burst added to them.
_TAKE_SLOTS = """
WITH cur AS (
    SELECT p.server, greatest(p.tat, c.now) AS start, c.now
    FROM smtp_send_pace p,
         (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) c
    WHERE p.server = $1
    FOR UPDATE OF p
), took AS (
    SELECT server, start, now,
           greatest(0, least($2::int, floor((now - start + $4::float8) / $3::float8)))::int
               AS granted
    FROM cur
)
UPDATE smtp_send_pace p SET tat = took.start + took.granted * $3::float8
FROM took WHERE p.server = took.server
RETURNING took.granted, took.start - took.now AS ahead
"""


async def take_send_slots(
    conn: Connection, server: str, want: int, interval: float, burst: float
) -> tuple[int, float]:
    """Take up to ``want`` send slots of ``server``'s bucket (``burst`` seconds deep).

    Returns how many were granted, and when none were, the seconds until one will be.
    """
    row = await conn.fetchrow(_TAKE_SLOTS, server, want, interval, burst)
    if row is None:  # the server's first send: its bucket starts full
        await conn.execute(
            "INSERT INTO smtp_send_pace (server, tat) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            server,
        )
        row = await conn.fetchrow(_TAKE_SLOTS, server, want, interval, burst)
        assert row is not None
    granted = int(row["granted"])
    return granted, 0.0 if granted else max(0.0, row["ahead"] + interval - burst)


# -- suppressions ----------------------------------------------------------------------

#: The retention period of a suppression (retention.toml: ``suppression_list``), counted
#: from the last time it was asserted (``asserted_at``, migration 027). Not a setting: a
#: shorter one would let mail resume sooner than the rules, and the certificates, say.
SUPPRESSION_DAYS = 3650


async def suppress(conn: Connection, email_index: bytes, category: str, source: str) -> None:
    """Record an opt-out; one asked for again keeps its first source and time, and its
    period starts again (the person still wants it)."""
    await conn.execute(
        "INSERT INTO suppressions (email_index, category, source) VALUES ($1, $2, $3)"
        " ON CONFLICT (email_index, category) DO UPDATE SET asserted_at = now()",
        email_index,
        category,
        source,
    )


async def suppress_all_by_operator(
    conn: Connection, user_id: UUID, operator_id: str, reference: str
) -> bool:
    """Record an operator's global suppression of the user's address, and who recorded
    it under which reference; False when the notifier holds no card for the user.

    Marked ``operator`` even where the address had opted out of all email by itself:
    the person's own request follows them to their next address (:func:`upsert_contact`).
    """
    async with conn.transaction():
        index = await conn.fetchval(
            "SELECT email_index FROM contacts WHERE user_id = $1 FOR SHARE", user_id
        )
        if index is None:
            return False
        await conn.execute(
            "INSERT INTO suppressions (email_index, category, source)"
            " VALUES ($1, 'all', 'operator')"
            " ON CONFLICT (email_index, category)"
            " DO UPDATE SET source = 'operator', asserted_at = now()",
            index,
        )
        await conn.execute(
            "INSERT INTO operator_suppressions (email_index, operator_id, request_reference)"
            " VALUES ($1, $2, $3)",
            index,
            operator_id,
            reference,
        )
    return True


# A suppression goes once nothing asserted it for its period: not recorded again, and
# its address held by no account (a contact's own, guardian or pending address, or a
# replaced one kept for its one email). One whose address is held stops that address's
# mail, whatever its age, and is kept. The operators' records of a "stop all email"
# request go with the address's global suppression: they are its audit trail and what
# makes it follow its person (_CARRY_OPERATOR_SUPPRESSION), and are nothing without it.
_FORGET_LAPSED_SUPPRESSIONS = """
DELETE FROM suppressions s
WHERE s.asserted_at < now() - make_interval(days => $1)
  AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.email_index = s.email_index)
  AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.guardian_index = s.email_index)
  AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.pending_index = s.email_index)
  AND NOT EXISTS (SELECT 1 FROM previous_addresses p WHERE p.email_index = s.email_index)
"""
# A statement of its own, so that it sees the suppressions just deleted as gone. A
# request and its suppression are written in one transaction: never one without the other.
_FORGET_ORPHAN_REQUESTS = """
DELETE FROM operator_suppressions o
WHERE NOT EXISTS (
    SELECT 1 FROM suppressions s WHERE s.email_index = o.email_index AND s.category = 'all'
)
"""


async def forget_lapsed_suppressions(conn: Connection) -> dict[str, int]:
    """Delete suppressions past their period (:data:`SUPPRESSION_DAYS` since last
    asserted) and the operators' records of them; the counts, by table, of those gone."""
    counts = {
        "suppressions": await conn.execute(_FORGET_LAPSED_SUPPRESSIONS, SUPPRESSION_DAYS),
        "operator_suppressions": await conn.execute(_FORGET_ORPHAN_REQUESTS),
    }
    return {table: n for table, status in counts.items() if (n := int(status.split()[-1]))}


# -- erasure ---------------------------------------------------------------------------


async def erase_subject_rows(conn: Connection, subject_id: UUID) -> dict[str, int]:
    """Delete every row of the subject; the counts go on the receipt."""
    counts = {}
    # First, and so under the lock of any scheduled notice listing the subject: a
    # fan-out of it in progress commits before this goes on, and the deletes below
    # (each with a fresh snapshot) then find the rows it wrote. A notice scheduled for
    # later lists its recipients by id until its fan-out: the subject's id goes from it.
    status = await conn.execute(
        "UPDATE notices SET listed = array_remove(listed, $1)"
        " WHERE status = 'scheduled' AND listed @> ARRAY[$1::uuid]",
        subject_id,
    )
    counts["scheduled_notices"] = int(status.split()[-1])
    tables = ("contacts", "inbox_items", "deliveries", "policy_notices", "previous_addresses")
    for table in tables:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE user_id = $1",  # noqa: S608 - constant names
            subject_id,
        )
        counts[table] = int(status.split()[-1])
    return counts


async def erased_accounts(conn: Connection, user_ids: Sequence[UUID]) -> set[UUID]:
    """Those of ``user_ids`` whose account erasure is done here."""
    rows = await conn.fetch(
        "SELECT subject_id FROM erasures WHERE whole_account AND state = 'done'"
        " AND subject_id = ANY($1::uuid[])",
        list(user_ids),
    )
    return {r["subject_id"] for r in rows}


#: How long after an account's erasure rows written for it are looked for: a fan-out or
#: an email plan that ran alongside the erasure commits within seconds of it.
SWEEP_WINDOW = timedelta(hours=1)


async def sweep_erased(conn: Connection) -> dict[str, int]:
    """Delete rows of subjects whose account erasure finished within ``SWEEP_WINDOW``,
    and of requests erased within it.

    A fan-out or an email plan that ran alongside an erasure may commit rows for the
    subject after the erasure's deletes looked (they could not see them uncommitted).
    """
    swept = {}
    for table in ("inbox_items", "deliveries", "policy_notices", "previous_addresses",
                  "contacts"):  # fmt: skip
        status = await conn.execute(
            f"DELETE FROM {table} x USING erasures e"  # noqa: S608 - constant names
            " WHERE e.whole_account AND e.state = 'done' AND e.erased_at > now() - $1::interval"
            " AND x.user_id = e.subject_id",
            SWEEP_WINDOW,
        )
        if count := int(status.split()[-1]):
            swept[table] = count
    # A reply fanned out alongside its request's erasure: the request is known here by
    # its digest only (migration 023), so by the replies accepted since a while before.
    requests = await conn.fetch(
        "SELECT DISTINCT e.subject_id, n.request_id FROM erasures e"
        " JOIN notices n ON n.request_id IS NOT NULL"
        "  AND n.created_at > e.erased_at - $1::interval"
        "  AND sha256(convert_to(n.request_id::text, 'UTF8')) = e.item_digest"
        " WHERE e.item_digest IS NOT NULL AND e.erased_at > now() - $1::interval",
        SWEEP_WINDOW,
    )
    for r in requests:
        for table, count in (await erase_request_items(conn, r[0], r[1])).items():
            if count:
                swept[table] = swept.get(table, 0) + count
    if count := await forget_tombstoned_contacts(conn):
        swept["tombstoned_contacts"] = count
    return swept


async def policy_superseded(conn: Connection, effective_at: datetime) -> bool:
    """Whether a version announced here takes effect after ``effective_at`` and is in
    force already: a version taking effect then binds no one any more. One still to come
    does not supersede it: until that instant, the earlier version is the one in force."""
    rows = await conn.fetch(
        "SELECT params->>'effective_from' AS instant, params->>'effective_at' AS day"
        " FROM notices WHERE template = 'policy_change'"
    )
    now = datetime.now(UTC)
    return any(effective_at < later <= now for later in _instants(rows))


def _instants(rows: Sequence[Any]) -> Iterator[datetime]:
    """When each version in ``rows`` takes effect: its instant, or for a notice from
    before instants were kept, the start of its UTC day. A SendNotice may put any text
    in its params: text that is neither must not count, nor stop a version read later."""
    for row in rows:
        try:
            if row["instant"] is not None:
                instant = datetime.fromisoformat(row["instant"])
            else:
                instant = datetime.combine(date.fromisoformat(row["day"] or ""), time.min, UTC)
        except ValueError:
            continue
        if instant.tzinfo is not None:  # a time of no zone is no instant
            yield instant


async def request_erased(conn: Connection, subject_id: UUID, request_id: UUID) -> bool:
    """Whether the subject's request was erased here (an erasure of that one request)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM erasures"
            " WHERE item_digest = sha256(convert_to($1::uuid::text, 'UTF8')) AND subject_id = $2)",
            request_id,
            subject_id,
        )
    )


async def erase_request_items(
    conn: Connection, subject_id: UUID, request_id: UUID
) -> dict[str, int]:
    """Everything of the subject's about one of their requests: the inbox items and email
    deliveries of its notices (replies), then those notices once nobody else has one.

    By the request_id column, not the params' text: it is indexed, and it reads the id
    however the params spelt it (in capitals, say)."""
    erased: dict[str, int] = {}
    for table in ("inbox_items", "deliveries"):
        status = await conn.execute(
            f"DELETE FROM {table} x USING notices n WHERE x.notice_id = n.notice_id"  # noqa: S608
            " AND x.user_id = $1 AND n.request_id = $2",
            subject_id,
            request_id,
        )
        erased[table] = int(status.split()[-1])
    status = await conn.execute(
        "DELETE FROM notices n WHERE n.request_id = $1"
        " AND NOT EXISTS (SELECT 1 FROM inbox_items i WHERE i.notice_id = n.notice_id)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notice_id = n.notice_id)",
        request_id,
    )
    erased["notices"] = int(status.split()[-1])
    return erased


@dataclass(frozen=True)
class OpsGauges:
    held: int
    deliveries: dict[str, int]  # pending, sending, dead
    oldest_due_seconds: float
    dead_last_hour: int  # given up on in the last hour (and not replayed since)
    in_doubt: int  # dead letters the mail server may have: an operator must look


async def ops_gauges(conn: Connection) -> OpsGauges:
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT count(*) FROM notices WHERE held_until > now()) AS held,"
        " (SELECT count(*) FROM deliveries WHERE status = 'pending') AS pending,"
        " (SELECT count(*) FROM deliveries WHERE status = 'sending') AS sending,"
        " (SELECT count(*) FROM deliveries WHERE status = 'dead') AS dead,"
        " (SELECT count(*) FROM deliveries WHERE status = 'dead'"
        "    AND finished_at > now() - interval '1 hour') AS dead_last_hour,"
        " (SELECT count(*) FROM deliveries WHERE status = 'dead' AND in_doubt) AS in_doubt,"
        " (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)"
        "    FROM deliveries WHERE status IN ('pending', 'sending')"
        "    AND next_attempt_at <= now()) AS oldest_due"
    )
    assert row is not None
    return OpsGauges(
        held=row["held"],
        deliveries={s: row[s] for s in ("pending", "sending", "dead")},
        oldest_due_seconds=max(0.0, float(row["oldest_due"])),
        dead_last_hour=row["dead_last_hour"],
        in_doubt=row["in_doubt"],
    )
