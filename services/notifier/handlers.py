"""One async function per event or command the notifier consumes, and the routing table.

Every handler runs inside the idempotent consumer's transaction (the event's id is
marked processed in it), and every effect is keyed besides: a notice id is recorded
once (``notices`` primary key), an inbox item once per (notice, user), an email once
per (notice, user, channel). So a redelivered event, or the same notice sent twice
under different event ids, never repeats an effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol
from uuid import UUID, uuid4, uuid5

from pydantic import ValidationError

from services.notifier import holds, late_contacts, store, stream_tickets
from services.notifier.config import GROUPS
from services.notifier.domain.erasure_notice import erasure_done_params
from services.notifier.domain.templates import (
    SECRET_LINKS,
    TEMPLATES,
    normalise_params,
    notice_problems,
)
from shared.bus import Delivery, Tombstone, Unprocessable, add_event
from shared.bus.consumer import Item
from shared.contact_card import OpenCard, open_card
from shared.db.pool import Connection
from shared.events import Event
from shared.events.catalogue.accounts import (
    ContactCardChanged,
    ContactCardChangedV1,
    IncidentDeclared,
    PolicyVersionPublished,
    RequestReplied,
)
from shared.events.catalogue.deletion import EraseSubject, SubjectErased
from shared.events.catalogue.notifier import SendNotice
from shared.events.envelope import validation_summary
from shared.tracing import trace_id_var, traced, traceparent_of
from shared.vault import Vault
from shared.vault.vault import SubjectShredded

log = logging.getLogger(__name__)

# Notice ids derived from the facts that cause them, so a fact told twice is one notice.
NOTICE_NAMESPACE = UUID("6f1d8a52-3c1e-4e57-9a57-0d4f5c1b9e21")
EMAIL_PURPOSE = "notifier.contacts.email"
NAME_PURPOSE = "notifier.contacts.name"
GUARDIAN_PURPOSE = "notifier.contacts.guardian_email"
PENDING_PURPOSE = "notifier.contacts.pending_email"
# The deletion service's retention category of our erasure records (retention.toml).
DISCLOSURE_LOG = "disclosure_log"


def policy_notice_id(policy_version: str) -> UUID:
    return uuid5(NOTICE_NAMESPACE, f"policy:{policy_version}")


def erasure_notice_id(request_id: UUID) -> UUID:
    return uuid5(NOTICE_NAMESPACE, f"erasure:{request_id}")


def email_index(vault: Vault, address: str) -> bytes:
    return vault.blind_index(address, purpose=EMAIL_PURPOSE)


@dataclass
class Handlers:
    vault: Vault
    #: How long a campaign waits for opt-outs in flight (the worker's
    #: ``notifier_marketing_settle_seconds``; None: :data:`MARKETING_SETTLE`).
    marketing_settle: timedelta | None = None

    # -- accounts.contacts ---------------------------------------------------------------

    async def on_contacts(self, conn: Connection, items: Sequence[Item]) -> None:
        sealed = await asyncio.gather(*(self._seal(item) for item in items))
        for item, contact in zip(traced(items), sealed, strict=True):
            if contact is not None:
                if await store.account_erasure_began(conn, contact.user_id):
                    # Read after the account's erasure began: a dead letter replayed
                    # after the tombstone, or a late redelivery. It changes nothing:
                    # no contact comes back, none is changed (a confirming erasure's
                    # email goes to the one it began with), no one is told or sent
                    # what they missed.
                    log.info("contact card of subject %s ignored: erasure began", contact.user_id)
                    continue
                await tell_replaced_address(conn, contact)
                await store.upsert_contact(conn, contact)
                await late_contacts.deliver_missed(conn, contact.user_id)
            elif isinstance(item, Tombstone) and item.key is not None:
                try:
                    user_id = UUID(item.key.decode())
                except ValueError:
                    continue  # not a user's key: nothing of ours to erase
                await store.erase_contact_on_tombstone(conn, user_id)

    async def _seal(self, item: Item) -> store.SealedContact | None:
        if not isinstance(item, Delivery):
            return None
        try:
            if isinstance(item.event, ContactCardChanged):
                card = await open_card(self.vault, item.event)
            elif isinstance(item.event, ContactCardChangedV1):
                card = OpenCard(**item.event.model_dump())  # a record from before v2
            else:
                return None
            return await self._sealed_contact(card)
        except SubjectShredded:
            log.info("contact card of an erased subject ignored")
            return None
        except ValidationError as exc:  # dead-lettered with field names, never values
            raise Unprocessable(f"contact card opens invalid: {validation_summary(exc)}") from None

    async def _sealed_contact(self, card: OpenCard) -> store.SealedContact:
        """The card sealed for this database: own purposes, an index to find it by email."""
        uid = card.user_id
        guardian, pending = card.guardian_email, card.pending_email
        return store.SealedContact(
            user_id=uid,
            email_index=email_index(self.vault, card.email),
            email=await self.vault.seal(uid, card.email, purpose=EMAIL_PURPOSE),
            name=await self.vault.seal(uid, card.name, purpose=NAME_PURPOSE),
            guardian_index=email_index(self.vault, guardian) if guardian else None,
            guardian_email=(
                await self.vault.seal(uid, guardian, purpose=GUARDIAN_PURPOSE) if guardian else None
            ),
            pending_index=email_index(self.vault, pending) if pending else None,
            pending_email=(
                await self.vault.seal(uid, pending, purpose=PENDING_PURPOSE) if pending else None
            ),
            pending_change=card.pending_change if pending else None,
            locale=card.locale,
            age_band=card.age_band,
            marketing_email=card.marketing_email,
            tracking_opt_out=card.tracking_opt_out,
            active=card.active,
            card_changed_at=card.changed_at,
        )

    # -- notices: replies, policy versions, incidents, SendNotice ------------------------

    async def on_notices(self, conn: Connection, items: Sequence[Item]) -> None:
        await on_notices(conn, items, settle=self.marketing_settle)

    # -- deletion.commands ----------------------------------------------------------------

    async def on_deletion(self, conn: Connection, items: Sequence[Item]) -> None:
        for item in traced(items):
            if isinstance(item, Delivery) and isinstance(item.event, EraseSubject):
                await start_erasure(conn, self.vault, item.event)


async def on_notices(
    conn: Connection, items: Sequence[Item], *, settle: timedelta | None = None
) -> None:
    """Replies, policy versions, incidents and SendNotice commands become notices
    (a campaign due no sooner than ``settle``, :data:`MARKETING_SETTLE` by default)."""
    for item in traced(items):
        if not isinstance(item, Delivery):
            continue
        event = item.event
        if isinstance(event, RequestReplied) and await store.request_erased(
            conn, event.user_id, event.request_id
        ):
            continue  # a reply read after its request's erasure: about nothing kept
        if isinstance(event, PolicyVersionPublished) and await store.policy_superseded(
            conn, event.effective_at
        ):
            # Read after a later version took effect (a dead letter replayed late): told
            # now, every user would hear of a policy that no longer binds them.
            log.warning("policy version %s read after a later one took effect: not announced",
                        event.policy_version)  # fmt: skip
            continue
        notice = notice_for(event, item.envelope.source)
        if notice is not None:
            await accept_notice(conn, notice, settle=settle)


def notice_for(event: Event, source: str) -> store.Notice | None:
    """The notice an event or command asks for (None: the event is not for us)."""
    if isinstance(event, RequestReplied):
        return store.Notice(
            notice_id=event.reply_id,
            template="request_reply",
            category="transactional",
            audience="listed",
            user_ids=(event.user_id,),
            params={"request_id": str(event.request_id)},
            channels=("email", "inbox"),
            recipient="user",
            pinned=False,
            source=source,
        )
    if isinstance(event, PolicyVersionPublished):
        return store.Notice(
            notice_id=policy_notice_id(event.policy_version),
            template="policy_change",
            category="policy_change",
            audience="all",
            params={
                "policy_version": event.policy_version,
                "summary": event.summary,
                # The UTC day, as accounts' GET /policy/current and the pages date it
                # (the event keeps the operator's offset); the instant, to order versions.
                "effective_at": event.effective_at.astimezone(UTC).date().isoformat(),
                "effective_from": event.effective_at.astimezone(UTC).isoformat(),
            },
            channels=("email", "inbox"),
            recipient="user",
            pinned=True,
            source=source,
        )
    if isinstance(event, IncidentDeclared):
        if event.audience == "listed" and not event.user_ids:
            raise Unprocessable("an incident for a listed audience lists nobody")
        return store.Notice(
            notice_id=event.incident_id,
            template="incident",
            category="account_security",
            audience=event.audience,
            user_ids=event.user_ids,
            params={"title": event.title, "message": event.message},
            channels=("email", "inbox"),
            recipient="user",
            pinned=True,
            source=source,
        )
    if isinstance(event, SendNotice):
        params = normalise_params(event.template, event.params)
        problems = notice_problems(event.template, event.category, params, event.recipient)
        if event.audience == "listed" and not event.user_ids:
            problems.append("a listed audience lists nobody")
        if not event.channels:
            problems.append("no channel")
        # A link confirming a new address goes to that address, and only there: never
        # to the inbox or the current address, whose holder could confirm without it.
        spec = TEMPLATES.get(event.template)  # unknown: one of the problems above
        recipient = "pending" if spec is not None and spec.pending else event.recipient
        problems.extend(secret_link_problems(event.template, params, event.channels, recipient))
        if problems:
            raise Unprocessable("; ".join(problems))
        return store.Notice(
            notice_id=event.notice_id,
            template=event.template,
            category=event.category,
            audience=event.audience,
            user_ids=event.user_ids,
            params=params,
            channels=tuple(dict.fromkeys(event.channels)),
            recipient=recipient,
            pinned=TEMPLATES[event.template].pinned,
            source=source,
            send_at=event.send_at,
            card_changed_at=event.card_changed_at,
        )
    return None


def secret_link_problems(
    template: str, params: dict[str, str], channels: Sequence[str], recipient: str
) -> list[str]:
    """Why a one-time-link template may not go to the inbox on these channels.

    Its link is stripped from the notice once its one email is done (store.record_results),
    and the inbox item renders from the same params: on a notice that also goes by email
    it would show the live link in-site until then (older items render without it,
    Renderer.inbox), whatever the params were called. An in-site copy alone
    (sent as a notice of its own, as accounts does) is kept, exported and streamed: it
    may hold a link, never a live token. Only the user's own notices have inbox items
    (store.fan_out): to another recipient the inbox channel writes nothing.
    """
    if template not in SECRET_LINKS or "inbox" not in channels or recipient != "user":
        return []
    if "token" in params or "email" in channels:
        return [f"{template} carries a one-time link: by email only"]
    return []


async def tell_replaced_address(conn: Connection, contact: store.SealedContact) -> None:
    """A card naming another email than the one we hold: tell the replaced address.

    Whoever changed the address (the user, or someone who took over the session and
    knew the password) also controls the new one; the old one is where the owner can
    still learn of it. The address is kept, sealed, for that one email only. An older
    card than the one held (a replayed record) changes nothing and tells no one.
    """
    held = await store.contact_address(conn, contact.user_id)
    if held is None or held.email_index == contact.email_index:
        return
    if (
        held.card_changed_at is not None
        and contact.card_changed_at is not None
        and contact.card_changed_at <= held.card_changed_at
    ):
        return
    # Random, not derived from the subject or the address: a notice row outlives an
    # erasure, and a change is told once because the card then holds the new address.
    notice_id = uuid4()
    await store.keep_previous_address(conn, notice_id, contact.user_id, held)
    await accept_notice(
        conn,
        store.Notice(
            notice_id=notice_id,
            template=store.EMAIL_CHANGED,
            category="account_security",
            audience="listed",
            user_ids=(contact.user_id,),
            params={},
            channels=("email",),
            recipient="previous",
            pinned=False,
            source="notifier",
        ),
    )


#: How long a marketing notice waits before it fans out and its emails are decided
#: (P-32), unless ``notifier_marketing_settle_seconds`` says otherwise. An opt-out made
#: in the account reaches the notifier as a contact card, on another topic than the
#: campaign, a fraction of a second after the account's answer: a campaign sent at once
#: would be decided before it. A campaign is never urgent.
MARKETING_SETTLE = timedelta(seconds=10)
# How soon a marketing notice waiting for contact cards looks again.
CARDS_RECHECK = timedelta(seconds=1)


class CardsReady(Protocol):
    """Whether every contact card on the bus when a notice came due is applied
    (:class:`services.notifier.cards_caught_up.CardsCaughtUp`)."""

    async def ready(self, notice_id: UUID) -> bool: ...


def settled(notice: store.Notice, now: datetime, settle: timedelta | None = None) -> store.Notice:
    """A marketing notice due no sooner than ``settle`` (:data:`MARKETING_SETTLE`) from
    ``now``."""
    earliest = now + (MARKETING_SETTLE if settle is None else settle)
    if notice.category != "marketing" or (notice.send_at and notice.send_at >= earliest):
        return notice
    return replace(notice, send_at=earliest)


async def accept_notice(
    conn: Connection, notice: store.Notice, *, settle: timedelta | None = None
) -> int:
    """Record the notice once, then fan it out now or when it is due (a marketing one
    once opt-outs in flight have come: ``settle``, :data:`MARKETING_SETTLE` by default)."""
    now = datetime.now(UTC)
    notice = settled(notice, now, settle)
    scheduled = notice.send_at is not None and notice.send_at > now
    if not await store.insert_notice(conn, notice, scheduled=scheduled):
        return 0  # the same notice again (another event id): nothing to repeat
    if scheduled:
        return 0
    return await fan_out(conn, notice)


async def fan_out(conn: Connection, notice: store.Notice) -> int:
    count = await store.fan_out(conn, notice)
    if notice.template == "policy_change":
        await store.record_policy_notices(conn, notice.notice_id, notice.params["policy_version"])
    return count


async def fan_out_due(conn: Connection, cards: CardsReady) -> int | None:
    """Fan out scheduled notices whose time came (the scheduler loop); None if none is due.

    A marketing notice whose opt-outs may still be in flight (``cards``) is put off by a
    second. Returns how many were claimed, held and put-off ones included: each goes in
    a savepoint of its own, so one that fails is held back without undoing the others'.
    """
    due = await store.claim_scheduled(conn)
    for notice in due:
        if notice.category == "marketing" and not await _cards_ready(cards, notice.notice_id):
            await store.put_off(conn, notice.notice_id, CARDS_RECHECK)
            continue
        await holds.isolated(conn, "scheduler", notice.notice_id, partial(fan_out, conn, notice))
    return len(due) or None


async def _cards_ready(cards: CardsReady, notice_id: UUID) -> bool:
    """Whether the cards are caught up; not yet while Kafka cannot tell. Raised, the error
    would undo the scheduler's transaction, and the same campaign (the oldest due) would
    be claimed again at every round while no other scheduled notice went out."""
    try:
        return await cards.ready(notice_id)
    except Exception as exc:
        log.warning("contact cards unknown for notice %s (%s): put off", notice_id,
                    type(exc).__name__)  # fmt: skip
        return False


# -- erasure -------------------------------------------------------------------------------


async def start_erasure(conn: Connection, vault: Vault, command: EraseSubject) -> None:
    """Plan the final confirmation; the subject's rows go once it went (see finish_erasure).

    Idempotent: a repeated command for a finished request erases again and answers (see
    :func:`erase_again`); one still confirming is left to finish, unless its email was
    given up on (then the command is an operator's retry). A retention release (an
    account's erasure after the first) is no new erasure: see :func:`release_retained`.
    """
    row = await conn.fetchrow(
        "SELECT state, whole_account FROM erasures WHERE request_id = $1", command.request_id
    )
    if row is not None:
        if row["state"] == "done":
            await erase_again(conn, command, whole_account=row["whole_account"])
        elif await _final_email_dead(conn, command.request_id):
            # The deletion service escalated the request (no receipt within its time)
            # and an operator retried it: the erasure goes on without the email.
            await finish_erasure(conn, command.request_id)
        return
    if command.scope != "account":
        erased: dict[str, int] = {}
        if command.scope == "request" and command.item_id is not None:
            erased = await store.erase_request_items(conn, command.subject_id, command.item_id)
        await conn.execute(
            "INSERT INTO erasures (request_id, subject_id, state, erased, erased_at,"
            " item_digest) VALUES ($1, $2, 'done', $3, now(), sha256(convert_to($4::uuid::text,"
            " 'UTF8')))",
            command.request_id,
            command.subject_id,
            erased,
            command.item_id if command.scope == "request" else None,
        )
        await _receipt(conn, command.request_id, command.subject_id, erased)
        return
    if await vault.is_shredded(command.subject_id):
        await release_retained(conn, command)
        return
    await conn.execute(
        "INSERT INTO erasures (request_id, subject_id, state, whole_account, trace_id)"
        " VALUES ($1, $2, 'confirming', true, $3)",
        command.request_id,
        command.subject_id,
        trace_id_var.get(),
    )
    if not command.confirm_to_subject:
        # A sign-up never completed: its address was never confirmed, so no email is
        # sent to it, this one included.
        await finish_erasure(conn, command.request_id)
        return
    await accept_notice(
        conn,
        store.Notice(
            notice_id=erasure_notice_id(command.request_id),
            template="erasure_done",
            category="transactional",
            audience="listed",
            user_ids=(command.subject_id,),
            params=erasure_done_params(command),
            channels=("email",),
            recipient="user",
            pinned=False,
            source="notifier",
            erasure_request=command.request_id,
        ),
    )


async def _final_email_dead(conn: Connection, request_id: UUID) -> bool:
    """Whether the erasure's final email was given up on (a dead letter kept for a
    replay: the mail server was away, or may have it)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE notice_id = $1 AND status = 'dead')",
            erasure_notice_id(request_id),
        )
    )


async def erase_again(conn: Connection, command: EraseSubject, *, whole_account: bool) -> None:
    """A command for an erasure done here: a resend, or an operator's retry (a new pass
    under the same id, because the verifier still found the subject somewhere).

    Answering with the counts recorded at the first pass would erase nothing the retry
    was for, and that receipt would count for the new pass: the request would go round
    erase, verify, escalate for ever. So the rows are erased again, idempotently (a mere
    resend finds nothing, and the deletion service keeps the first receipt of a pass),
    and the receipt states what this pass erased. No second "your data was deleted"
    email: it went with the first pass, and the address went after it.
    """
    subject = command.subject_id
    erased: dict[str, int] = {}
    if whole_account:
        erased = await _erase_account_rows(conn, subject)
    elif command.scope == "request" and command.item_id is not None:
        erased = await store.erase_request_items(conn, subject, command.item_id)
    await _receipt(conn, command.request_id, subject, erased)


async def release_retained(conn: Connection, command: EraseSubject) -> None:
    """A kept category's period ended: delete what is ours of it, and answer.

    Recognised by the subject's shredded key: the deletion service shreds it only once
    every store answered the account's erasure, and sends a release (the same command
    under its own id, without the released category in ``retain_categories``) after
    that. So no erasure record is written and no email planned: the first erasure had
    both, and no address is left to write to.
    """
    erased: dict[str, int] = {}
    if DISCLOSURE_LOG not in command.retain_categories:
        status = await conn.execute(
            "DELETE FROM erasures WHERE subject_id = $1", command.subject_id
        )
        erased["erasures"] = int(status.split()[-1])
    # suppression_list: opt-outs are keyed by the address's blind index alone, and the
    # address went with the contact at the erasure: none can be traced to the subject.
    # Their period is applied by address instead (store.forget_lapsed_suppressions): the
    # erasure was the last time the subject's addresses were held, so they go at this
    # release's time unless asserted since (the address asked again, or taken again).
    await _receipt(conn, command.request_id, command.subject_id, erased)


async def finish_erasure(conn: Connection, request_id: UUID) -> None:
    """The final email went (or cannot go): erase the subject's rows and answer."""
    row = await conn.fetchrow(
        "SELECT subject_id, trace_id FROM erasures"
        " WHERE request_id = $1 AND state = 'confirming' FOR UPDATE",
        request_id,
    )
    if row is None:
        return
    erased = await _erase_account_rows(conn, row["subject_id"])
    await conn.execute(
        "UPDATE erasures SET state = 'done', erased = $2, erased_at = now() WHERE request_id = $1",
        request_id,
        erased,
    )
    # Under the command's trace, as if answered when it came (shared/tracing.py).
    traced_as = traceparent_of(row["trace_id"])
    await _receipt(conn, request_id, row["subject_id"], erased, traced_as)


async def _erase_account_rows(conn: Connection, subject_id: UUID) -> dict[str, int]:
    erased = await store.erase_subject_rows(conn, subject_id)
    erased["stream_tickets"] = await stream_tickets.erase(conn, subject_id)
    return erased


async def _receipt(
    conn: Connection,
    request_id: UUID,
    subject_id: UUID,
    erased: dict[str, int],
    traceparent: str | None = None,
) -> None:
    await add_event(
        conn,
        SubjectErased(
            request_id=request_id,
            subject_id=subject_id,
            store="notifier",
            erased=erased,
            erased_at=datetime.now(UTC),
        ),
        source="notifier",
        subject=str(subject_id),
        traceparent=traceparent,
    )


Route = Callable[[Connection, Sequence[Item]], Awaitable[None]]


def routes(handlers: Handlers) -> dict[str, tuple[tuple[str, ...], Route]]:
    """Consumer name -> (topics, handler): one consumer group per topic group."""
    handler_of = {
        "notifier.contacts": handlers.on_contacts,
        "notifier.notices": handlers.on_notices,
        "notifier.deletion": handlers.on_deletion,
    }
    return {name: (topics, handler_of[name]) for name, topics in GROUPS.items()}
