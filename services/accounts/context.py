"""What every accounts route needs, from ``app.state``: settings, pool, vault, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID, uuid4

import asyncpg
from fastapi import Depends, Request

from services.accounts.config import AccountsSettings
from services.accounts.domain.throttle import ThrottlePolicy
from services.accounts.security import HASH_THREADS
from shared.bus import add_events
from shared.db.pool import Connection
from shared.events import Event
from shared.events.catalogue.notifier import NoticeCategory, SendNotice
from shared.observability import Problem
from shared.pii import find_card_numbers
from shared.service import Runtime
from shared.vault import Vault

SOURCE = "accounts"

# Vault purposes: "<database>.<table>.<column>" (the associated data of each seal).
EMAIL = "accounts.users.email"
EMAIL_INDEX = "accounts.users.email_index"
PENDING_EMAIL = "accounts.users.pending_email"
NAME = "accounts.users.name"
BIRTH_DATE = "accounts.users.birth_date"
GUARDIAN_EMAIL = "accounts.users.guardian_email"
DEVICE_MODEL = "accounts.devices.model"
MESSAGE_BODY = "accounts.request_messages.body"
INVOICE_DESCRIPTION = "accounts.invoices.description"
RETENTION_SUBJECT_INDEX = "accounts.retention_keys.subject_index"
OPERATOR_EMAIL = "accounts.operators.email"
OPERATOR_EMAIL_INDEX = "accounts.operators.email_index"
THROTTLE_ACCOUNT = "accounts.login_throttle.account"
THROTTLE_CLIENT = "accounts.login_throttle.client"


@dataclass
class Context:
    settings: AccountsSettings
    runtime: Runtime
    # A login holds its account's throttle row (a pool connection) while argon2 runs. It
    # takes one of these turns first, so that in a login storm the queue for the hashing
    # threads forms here, holding nothing, rather than with connections every other
    # request needs. Three turns per thread: while logins talk to the database before or
    # after their hash (slowly, when hashes keep every core busy), another is ready to
    # hash, and no hashing thread waits idle.
    login_turns: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(3 * HASH_THREADS)
    )

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    @property
    def vault(self) -> Vault:
        assert self.runtime.vault is not None
        return self.runtime.vault

    @property
    def private_key(self) -> str:
        return self.settings.token_private_key.get_secret_value()

    def account_policy(self) -> ThrottlePolicy:
        s = self.settings
        return ThrottlePolicy(
            free_failures=s.accounts_account_free_failures,
            base_seconds=s.accounts_backoff_base_seconds,
            max_seconds=s.accounts_backoff_max_seconds,
            lockout_failures=s.accounts_lockout_failures,
        )

    def client_policy(self) -> ThrottlePolicy:
        s = self.settings
        return ThrottlePolicy(
            free_failures=s.accounts_client_free_failures,
            base_seconds=s.accounts_backoff_base_seconds,
            max_seconds=s.accounts_backoff_max_seconds,
            lockout_failures=None,
            window=timedelta(seconds=s.accounts_client_window_seconds),
        )

    def link(self, page: str, token: str) -> str:
        return f"{self.settings.accounts_public_url}/{page}#token={token}"


def context_of(request: Request) -> Context:
    context: Context = request.app.state.accounts
    return context


async def get_context(request: Request) -> Context:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
    # thread hop on every request for a dictionary look-up.
    return context_of(request)


Ctx = Annotated[Context, Depends(get_context)]


async def emit(conn: Connection, event: Event, subject: UUID | str | None) -> None:
    """Queue an event in the caller's transaction (the relay publishes it)."""
    await emit_all(conn, [(event, subject)])


async def emit_all(conn: Connection, events: Sequence[tuple[Event, UUID | str | None]]) -> None:
    """Queue events in this order in the caller's transaction, in one statement."""
    await add_events(
        conn,
        [(event, None if subject is None else str(subject)) for event, subject in events],
        source=SOURCE,
    )


async def notify(
    conn: Connection,
    *,
    template: str,
    category: NoticeCategory,
    user_ids: tuple[UUID, ...] = (),
    params: Mapping[str, str] | None = None,
    channels: tuple[Literal["email", "inbox"], ...] = ("email", "inbox"),
    recipient: Literal["user", "guardian"] = "user",
    audience: Literal["all", "listed"] = "listed",
    card_changed_at: datetime | None = None,
) -> UUID:
    """Ask the notifier to send a notice (ids, tokens, links and wording; no personal data).

    ``card_changed_at``: the email must wait for the recipient's card of that change.
    """
    notice_id = uuid4()
    command = SendNotice(
        notice_id=notice_id,
        template=template,
        category=category,
        audience=audience,
        user_ids=user_ids,
        params=dict(params or {}),
        channels=channels,
        recipient=recipient,
        card_changed_at=card_changed_at,
    )
    subject = str(user_ids[0]) if len(user_ids) == 1 else str(notice_id)
    await emit(conn, command, subject)
    return notice_id


def refuse_card_numbers(**fields: str | None) -> None:
    """P-09: a card number in any text field refuses the whole request, before storage."""
    holding = sorted(name for name, text in fields.items() if text and find_card_numbers(text))
    if holding:
        raise Problem(
            422,
            "Card numbers are not accepted",
            "We never store payment card numbers. Remove the card number from: "
            + ", ".join(holding)
            + ".",
            slug="card-number",
            errors=[
                {
                    "location": f"body.{name}",
                    "message": "holds a payment card number",
                    "type": "card_number",
                }
                for name in holding
            ],
        )


def refuse_own_guardian(
    vault: Vault, account_index: bytes, guardian: str | None, field: str
) -> None:
    """P-26: 422 if ``guardian`` is, as the blind index sees addresses, the account's own
    (``account_index``). Both links would go to one mailbox: a child could consent for
    themselves. ``field`` is the one the caller typed (the guardian's or the account's)."""
    if guardian is None or vault.blind_index(guardian, purpose=EMAIL_INDEX) != account_index:
        return
    raise Problem(
        422,
        "Guardian is the account",
        "Under 13, a parent or guardian consents from their own email address: it cannot"
        " be the account's.",
        slug="guardian-is-account",
        errors=[
            {
                "location": f"body.{field}",
                "message": "is the account's own address"
                if field == "guardian_email"
                else "is the parent or guardian's address",
                "type": "guardian_is_account",
            }
        ],
    )


def not_found(what: str) -> Problem:
    return Problem(404, "Not found", f"No such {what}.", slug="not-found")
