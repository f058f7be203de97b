"""Notices for all users that a person's card came too late for.

A notice for all users reaches the contacts the notifier holds, active, when it fans
out. A person whose account existed then can still miss it: their first card was on its
way (written by accounts before the fan-out, read after it), or their account was not
active yet (an address not yet confirmed is written to by no notice). A breach notice
and a policy change concern every account that existed (P-17, P-23): each card that
arrives looks for those it missed and delivers them as the fan-out would have.

The all-users fan-out holds the contacts table against new cards while it runs
(:func:`services.notifier.store.fan_out`), so a card is either seen by the fan-out or
sees the fanned-out notice here: never neither.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from services.notifier.store import INBOX_CHANNEL, LATE_CARD_CATEGORIES, WORK_CHANNEL
from shared.db.pool import Connection
from shared.events.catalogue.notifier import NoticeDelivered
from shared.events.topics import NOTIFIER_DELIVERIES

#: How far back: longer than an account lives unactivated (it lapses after 30 days once
#: its links expired), so no activation is too late; an older notice is not news.
WINDOW = timedelta(days=60)

_MISSED = """
SELECT n.notice_id, n.template, n.channels, n.pinned, n.params
FROM contacts c
JOIN notices n ON n.audience = 'all' AND n.status = 'fanned_out' AND n.recipient = 'user'
  AND n.category = ANY($2::text[])
  AND n.fanned_out_at > c.known_since AND n.fanned_out_at > now() - $3::interval
WHERE c.user_id = $1 AND c.active AND NOT c.erase_pending
  -- A card read late, after the account's erasure here: nothing is written for it.
  AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.subject_id = $1 AND e.whole_account)
  AND NOT EXISTS (SELECT 1 FROM inbox_items i WHERE i.notice_id = n.notice_id AND i.user_id = $1)
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notice_id = n.notice_id AND d.user_id = $1)
ORDER BY n.fanned_out_at
"""

# The inbox item's outcome, as the fan-out queues it for everyone else.
_INBOX_OUTCOME = """
INSERT INTO bus_outbox (topic, key, value, headers, event_id)
SELECT $3, convert_to($2::uuid::text, 'UTF8'),
       convert_to(jsonb_build_object(
           'specversion', '1.0', 'id', e.id, 'type', $4::text, 'source', 'notifier',
           'time', now(), 'subject', $2::uuid::text, 'datacontenttype', 'application/json',
           'data', jsonb_build_object('notice_id', $1::uuid, 'user_id', $2::uuid,
                                      'channel', 'inbox', 'outcome', 'sent')
       )::text, 'UTF8'),
       jsonb_build_object('ce_id', e.id::text, 'ce_type', $4::text),
       e.id
FROM (SELECT gen_random_uuid() AS id) e
"""


async def deliver_missed(conn: Connection, user_id: UUID) -> int:
    """Deliver to the user the notices for all users their card came too late for;
    returns how many. Run in the card's transaction, after it is stored."""
    missed = await conn.fetch(_MISSED, user_id, list(LATE_CARD_CATEGORIES), WINDOW)
    for n in missed:
        outcomes_pending = await conn.fetchval(
            "UPDATE notices SET recipients = recipients + 1 WHERE notice_id = $1"
            " RETURNING inbox_outcomes_pending",
            n["notice_id"],
        )
        if "inbox" in n["channels"]:
            # The clock's time, not the transaction's start (a batch of cards, perhaps
            # long held by a fan-out's lock). A lost listener catches the item up by
            # its transaction (written_xid), not by this time (stream.py).
            await conn.execute(
                "INSERT INTO inbox_items (user_id, notice_id, pinned, created_at)"
                " VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT DO NOTHING",
                user_id,
                n["notice_id"],
                n["pinned"],
            )
            # An open stream of the user's shows it now; theirs only: everyone else the
            # notice reached has had their item since its fan-out.
            await conn.execute(
                "SELECT pg_notify($1, $2)", INBOX_CHANNEL, f"{n['notice_id']} {user_id}"
            )
            if not outcomes_pending:  # else the fan-out's outcomes, still queued, hold it
                await conn.execute(
                    _INBOX_OUTCOME,
                    n["notice_id"],
                    user_id,
                    NOTIFIER_DELIVERIES.name,
                    NoticeDelivered.type_name(),
                )
        if "email" in n["channels"]:
            await conn.execute(
                "INSERT INTO deliveries (notice_id, user_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                n["notice_id"],
                user_id,
            )
        if n["template"] == "policy_change":
            await conn.execute(
                "INSERT INTO policy_notices (user_id, policy_version, notice_id)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                user_id,
                n["params"]["policy_version"],
                n["notice_id"],
            )
    if missed:
        await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
    return len(missed)
