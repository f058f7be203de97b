"""The contact card, sealed for the bus and opened by its consumers.

The card is the one event carrying personal data. Its personal fields travel sealed
with the subject's vault key, so that shredding the key (the last step of an erasure)
leaves every copy on Kafka unreadable, whether compaction has run yet or not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared.events.catalogue.accounts import (
    CARD_EMAIL,
    CARD_GUARDIAN_EMAIL,
    CARD_NAME,
    CARD_PENDING_EMAIL,
    AgeBand,
    ContactCardChanged,
)
from shared.vault import Vault


class OpenCard(BaseModel):
    """A contact card with its personal fields in clear (in memory only), validated as
    version 1 was on the wire: a card that opens to a bad address is refused (and
    dead-lettered by a consumer), not mailed."""

    model_config = ConfigDict(frozen=True)

    user_id: UUID
    email: EmailStr
    name: str = Field(max_length=200)
    age_band: AgeBand
    locale: str = "en"
    guardian_email: EmailStr | None = None
    pending_email: EmailStr | None = None
    pending_change: UUID | None = None
    marketing_email: bool = False
    tracking_opt_out: bool = False
    active: bool = True
    changed_at: datetime | None = None


# The card's fields sealed on the bus, with their vault purposes; the others go in clear.
_SEALED = {
    "email": CARD_EMAIL,
    "name": CARD_NAME,
    "guardian_email": CARD_GUARDIAN_EMAIL,
    "pending_email": CARD_PENDING_EMAIL,
}
_CLEAR = (
    "locale",
    "age_band",
    "marketing_email",
    "tracking_opt_out",
    "active",
    "changed_at",
    "pending_change",
)


Crypt = Callable[[UUID, Any, str], Awaitable[Any]]  # (subject, value, purpose) -> value


async def _fields(card: OpenCard | ContactCardChanged, crypt: Crypt) -> dict[str, Any]:
    fields: dict[str, Any] = {name: getattr(card, name) for name in _CLEAR}
    for name, purpose in _SEALED.items():
        value = getattr(card, name)
        fields[name] = None if value is None else await crypt(card.user_id, value, purpose)
    return fields


async def seal_card(vault: Vault, card: OpenCard) -> ContactCardChanged:
    async def seal(subject: UUID, value: str, purpose: str) -> bytes:
        return await vault.seal(subject, value, purpose=purpose)

    return ContactCardChanged(user_id=card.user_id, **await _fields(card, seal))


async def open_card(vault: Vault, card: ContactCardChanged) -> OpenCard:
    """The card in clear; raises ``SubjectShredded`` once the subject is erased."""

    async def open_(subject: UUID, value: bytes, purpose: str) -> str:
        return await vault.open(subject, value, purpose=purpose)

    return OpenCard(user_id=card.user_id, **await _fields(card, open_))
