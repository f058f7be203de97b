"""The contact card: the one place personal data leaves accounts (compacted topic),
sealed with the subject's vault key."""

from __future__ import annotations

from collections.abc import Sequence

from services.accounts.context import EMAIL, GUARDIAN_EMAIL, NAME, PENDING_EMAIL, emit_all
from services.accounts.store import Row, UserRow
from shared.bus import add_tombstone
from shared.contact_card import OpenCard, seal_card
from shared.db.pool import Connection
from shared.events import Event
from shared.events.catalogue.accounts import ContactCardChanged
from shared.events.topics import ACCOUNTS_CONTACTS
from shared.vault import Vault


async def card_of(vault: Vault, user: UserRow) -> ContactCardChanged:
    """The user's card, its personal fields sealed again for the bus (their own purposes,
    the subject's key: shredding it makes the records on Kafka unreadable too)."""
    uid = user["id"]
    guardian, pending = user["guardian_email"], user["pending_email"]
    card = OpenCard(
        user_id=uid,
        email=await vault.open(uid, user["email"], purpose=EMAIL),
        name=await vault.open(uid, user["name"], purpose=NAME),
        locale=user["locale"],
        age_band=user["age_band"],
        guardian_email=(
            await vault.open(uid, guardian, purpose=GUARDIAN_EMAIL) if guardian else None
        ),
        pending_email=(await vault.open(uid, pending, purpose=PENDING_EMAIL) if pending else None),
        pending_change=user["pending_change"] if pending else None,
        marketing_email=user["marketing_email"] and user["age_band"] != "under_13",
        tracking_opt_out=user["tracking_opt_out"] or user["age_band"] == "under_13",
        active=user["active"],
        changed_at=user["updated_at"],
    )
    return await seal_card(vault, card)


async def publish_card(
    conn: Connection, vault: Vault, user: Row, after: Sequence[Event] = ()
) -> None:
    """Queue the user's current card (call after every change of a card field), after
    the user's events ``after`` that announce the change, in one statement."""
    card = await card_of(vault, user)
    await emit_all(conn, [*((event, user["id"]) for event in after), (card, user["id"])])


async def tombstone_card(conn: Connection, user_id: object) -> None:
    await add_tombstone(conn, ACCOUNTS_CONTACTS, str(user_id))
