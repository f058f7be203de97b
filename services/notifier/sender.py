"""The email sender: leases due deliveries, decides, renders, gates, sends, records.

* A dispatcher leases due deliveries in batches (``FOR UPDATE SKIP LOCKED``: several
  workers share the table) and decides what needs no SMTP at all (waiting for a contact
  card, suppressed, under 13, no consent) at lease time, usually under a second before
  the send, though a slow SMTP server can make it most of a lease: an opt-out recorded
  before that takes effect. The hand-over mark (below) checks suppressions once more,
  and for marketing the contact card's consent, tracking opt-out, age and state, so one
  recorded while the email waited to be sent stops it too (P-32).
* ``notifier_smtp_connections`` senders, each with its own SMTP connection behind the
  compliance gate, take send slots from the SMTP server's rate limit, which every
  worker process shares (:mod:`services.notifier.pace`).
* A recorder writes outcomes in batches: the delivery's state and its
  ``NoticeDelivered`` event in one transaction (outbox), and for the final email of an
  erasure, the erasure itself.
* SMTP 4xx and connection errors retry with exponential back-off and jitter up to
  ``notifier_max_attempts``; 5xx and gate refusals are dead letters with the reason
  (``python -m services.notifier.replay`` puts them back).

No email is sent twice, whenever a worker dies. Before a message's DATA, the sender
commits a hand-over mark on the delivery, and only while it still holds the lease and
the address has not unsubscribed nor, for marketing, the account opted out (otherwise
it sends nothing, and the delivery, left leased and unmarked, is leased and decided
again once the lease ends). A lease that expires on a marked delivery means the worker
died between the hand-over and recording the server's answer: the server may or may not
have the message. Such a delivery is **in doubt** and becomes a dead letter with that
reason instead of being sent again; so does one whose connection failed during DATA.
Operators look for its Message-ID (derived from the idempotency key: notice, user,
channel; see :func:`message_id`) in the mail server's log, and replay it if it is not
there. A worker that dies before the hand-over leaves nothing in doubt: the delivery is
leased again once the lease expires, and sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

import asyncpg

from services.notifier import handlers, store
from services.notifier.config import NotifierSettings
from services.notifier.domain import unsubscribe
from services.notifier.domain.compliance import ONE_CLICK, OutgoingEmail
from services.notifier.domain.greeting import greeting_name
from services.notifier.domain.rules import Recipient, backoff_seconds, suppression_reason
from services.notifier.domain.templates import Footer, Renderer
from services.notifier.mailer import (
    GatedTransport,
    InDoubt,
    NotSent,
    PermanentFailure,
    Refused,
    TemporaryFailure,
    Transport,
    gate_policy,
)
from services.notifier.pace import SendPace
from shared.bus import add_envelopes
from shared.bus.consumer import OUTAGES
from shared.bus.faults import crash_point
from shared.events import envelope_for
from shared.events.catalogue.notifier import NoticeDelivered
from shared.events.topics import NOTIFIER_DELIVERIES
from shared.vault import Vault
from shared.vault.vault import SubjectShredded

log = logging.getLogger(__name__)

IN_DOUBT = (
    "in doubt: {why}; not sent again, so it is never sent twice. If the mail server's log"
    " has no message with its Message-ID, replay it by its id"
)
RECORD_BATCH = 100  # outcomes pending that are written at once (else at each 0.1 s tick)
TransportFactory = Callable[[], Transport]


class Wake:
    """A broadcast wake-up: every waiter returns when rung (or after its timeout)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class HandOvers:
    """The senders' hand-over marks, committed together: one statement per round.

    A mark waits for the round in progress, if any, and goes in the next with every
    other mark that came meanwhile (group commit), so SMTP connections in parallel do
    not each pay a database round trip of their own.
    """

    def __init__(self, pool: asyncpg.Pool, margin_seconds: float = 0.0) -> None:
        self._pool = pool
        # A mark needs the lease to last this long yet: its MAIL, RCPT and DATA go after
        # it, and a lease ending before they are answered leaves the email in doubt.
        self._margin = margin_seconds
        self._waiting: list[tuple[store.Lease, asyncio.Future[None]]] = []
        self._rounds: asyncio.Task[None] | None = None

    async def mark(self, lease: store.Lease) -> None:
        """Return once marked; raise LeaseLost, or the outage, if it could not be.

        LeaseLost also when the address unsubscribed since the lease, or, for marketing,
        its account opted out: either way the email must not go, and its next lease
        decides it again.
        """
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((lease, done))
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.create_task(self._run_rounds())
        await done

    async def _run_rounds(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                async with self._pool.acquire() as conn:
                    leases = [lease for lease, _ in batch]
                    marked = await store.hand_over(conn, leases, self._margin)
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for lease, done in batch:
                if done.done():
                    continue
                if (lease.delivery_id, lease.lease_until) in marked:
                    done.set_result(None)
                else:
                    why = (
                        "lease lost, or its address unsubscribed (or its account opted out"
                        " of marketing) since it was leased"
                    )
                    done.set_exception(store.LeaseLost(f"delivery {lease.delivery_id}: {why}"))


@dataclass(frozen=True)
class Job:
    row: Any
    email: OutgoingEmail


def unsubscribe_token(settings: NotifierSettings, email_index: bytes, category: str) -> str:
    return unsubscribe.issue(
        settings.notifier_unsubscribe_secret.get_secret_value().encode(), email_index, category
    )


def unsubscribe_url(settings: NotifierSettings, email_index: bytes, category: str) -> str:
    token = unsubscribe_token(settings, email_index, category)
    return f"{settings.notifier_public_base_url}/api/notifier/unsubscribe/{token}"


def unsubscribe_mailto(settings: NotifierSettings, email_index: bytes, category: str) -> str:
    """The List-Unsubscribe mailto: a reply carries the token back in its subject, where
    the inbound webhook (routes/inbound.py) reads it; no one reads the From address."""
    token = unsubscribe_token(settings, email_index, category)
    return f"mailto:{settings.notifier_unsubscribe_mailto}?subject=unsubscribe%20{token}"


#: How often an email waiting for its contact card looks again. The card's arrival
#: wakes it within a second (the sender's card-wake loop: store.wake_for_cards); this
#: only bounds how late a lost wake is made up for, and how late the email is given up on.
CONTACT_RECHECK_SECONDS = 20.0
#: Waiting emails made due per statement of the card-wake loop.
CARD_WAKE_BATCH = 500


def contact_wait_delay(settings: NotifierSettings, waited: float) -> float:
    """Until an email waiting for its contact card is leased again: a few minutes, never
    past the end of its wait (by which it is a dead letter), nor under a retry's wait."""
    left = settings.notifier_contact_wait_seconds - waited
    later = min(CONTACT_RECHECK_SECONDS, left)
    return max(settings.notifier_retry_max_seconds, later)


def hand_over_margin(settings: NotifierSettings) -> float:
    """How long a lease must last yet to be handed over: MAIL and RCPT at their timeout
    each, so that a slow server leaves the mark refused (and the email retried), not a
    mark whose lease ended before DATA (a dead letter in doubt, though never sent). At
    most half the lease, so a short one can still be handed over."""
    smtp = 2 * settings.notifier_smtp_timeout_seconds
    return min(smtp, settings.notifier_lease_seconds / 2)


def lease_of(row: Any) -> store.Lease:
    """What the hand-over of a leased row checks: its lease, and the address and category
    its email goes to (an unsubscribe since the lease stops it there)."""
    return store.Lease(row["id"], row["lease_until"], row["address_index"], row["category"])


#: The namespace of the name-based UUIDs in emails' Message-IDs. Never to be changed: an
#: operator looks a delivery in doubt up by its Message-ID after any deploy.
MESSAGE_IDS = UUID("9a734d73-d740-4f82-9277-48d7bc3ba66e")


def message_id(row: Any) -> str:
    """Derived from the idempotency key (notice, user, channel): stable across retries and
    replays, so an operator can look a delivery in doubt up in the mail server's log
    (``GET ops/dead-letters`` shows it). A name-based UUID of the notice and the user, not
    the ids themselves: the mail provider keeps its logs after the user's erasure, and
    must not keep the user's id (nor a notice id to look it up by) with them."""
    key = uuid5(MESSAGE_IDS, f"{row['notice_id']}.{row['user_id']}")
    return f"<{key}.email@notifier.imt>"


class Sender:
    def __init__(
        self,
        settings: NotifierSettings,
        pool: asyncpg.Pool,
        vault: Vault,
        transport_factory: TransportFactory,
        wake: Wake,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._vault = vault
        self._transport_factory = transport_factory
        self._wake = wake
        self._renderer = Renderer()
        self._policy = gate_policy(settings)
        self._footer = Footer(
            settings.notifier_public_base_url,
            settings.notifier_postal_address,
            settings.notifier_ad_label,
            settings.notifier_reply_to,
        )
        # Rows leased (and decided) per statement, and at most that many queued: eight
        # per connection, but never more than a quarter second of sending at the rate
        # limit, so a decision (suppression included) stays fresh when its email goes.
        connections = settings.notifier_smtp_connections
        quarter_second = int(settings.notifier_send_rate_per_second / 4)
        self._batch = max(connections, min(connections * 8, quarter_second))
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=self._batch)
        self._pace = SendPace(
            pool,
            f"{settings.notifier_smtp_host}:{settings.notifier_smtp_port}",
            settings.notifier_send_rate_per_second,
            block=self._batch,
        )
        self._hand_overs = HandOvers(pool, hand_over_margin(settings))
        self._results: list[store.Result] = []
        self._recorded = Wake()
        self._space = Wake()
        self._stopping = asyncio.Event()
        self._sending_done = False
        self._in_flight = 0
        self._nothing_due = False
        self.sent = 0
        self.finished = 0
        self.dropped = 0  # outcomes that could not be recorded (see _record_one_by_one)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        senders = [
            asyncio.create_task(self._send_loop(i), name=f"connection {i}")
            for i in range(self.settings.notifier_smtp_connections)
        ]
        recorder = asyncio.create_task(self._record_loop(), name="recorder")
        cards = asyncio.create_task(self._card_wake_loop(), name="card waker")
        try:
            await run_supervised(self._dispatch_loop(), [*senders, recorder, cards])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 10)
        finally:
            for task in [*senders, cards]:
                task.cancel()
            await asyncio.gather(*senders, cards, return_exceptions=True)
            await self._pace.close()
            await self._release_queued()
            self._sending_done = True
            self._recorded.ring()
            await asyncio.gather(recorder, return_exceptions=True)
            with contextlib.suppress(*OUTAGES):
                await self._record_pending()

    async def _card_wake_loop(self) -> None:
        """Emails whose contact card came go now: looked for at every ring (a card's
        commit, a recorded wait) and every second, which bounds a ring missed while
        looking. Runs until cancelled: a helper that ends is taken for a crash
        (run_supervised), and stopping must still drain what is queued."""
        while True:
            woken = 0
            try:
                async with self._pool.acquire() as conn:
                    woken = await store.wake_for_cards(conn, CARD_WAKE_BATCH)
            except OUTAGES as exc:
                log.warning("sender: outage while waking emails (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("sender: emails waiting for their cards could not be woken")
                await asyncio.sleep(1.0)
            if woken:
                self._wake.ring()  # the dispatcher leases them now, not at its next tick
            if woken < CARD_WAKE_BATCH:
                # A gap, too: rung by every notification, it would look many times a
                # second while notices fan out, each time walking every waiting email.
                await asyncio.sleep(0.2)
                await self._wake.wait(0.8)

    # -- dispatch ----------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            room = self._queue.maxsize - self._queue.qsize()
            if room < max(1, self._batch // 2):
                await self._space.wait(0.5)  # senders are busy: lease no more yet
                continue
            try:
                claimed = await self._dispatch(room)
            except OUTAGES as exc:
                log.warning("sender: outage while leasing (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            self._nothing_due = claimed < room
            if self._nothing_due:  # wait for new work or a retry time
                if self._drained():
                    self._recorded.ring()  # outcomes decided without SMTP: record now
                await self._wake.wait(0.5)

    async def _dispatch(self, limit: int) -> int:
        async with self._pool.acquire() as conn:  # one statement: atomic without BEGIN
            rows = await store.claim_deliveries(conn, limit, self.settings.notifier_lease_seconds)
        # Every recipient's key in one round trip, not one each while composing.
        await self._vault.prefetch(r["user_id"] for r in rows if r["has_contact"])
        decided = await asyncio.gather(*(self._prepare(row) for row in rows))
        for item in decided:
            if isinstance(item, Job):
                await self._queue.put(item)
            else:
                self._add_result(item)
        return len(rows)

    async def _prepare(self, row: Any) -> Job | store.Result:
        """Everything decided before SMTP: a job to send, or the outcome already."""
        s = self.settings
        if row["in_doubt"]:
            stopped = "a sender handed it to the SMTP server and stopped before the answer"
            return _in_doubt(row, stopped)
        if row["erased"]:  # the account is gone; its address waits only for that email
            return _final(row, "done", "failed", "the subject was erased")
        # No card yet, or an older one than the notice needs (see SendNotice.card_changed_at).
        if not row["has_contact"]:
            if row["erasure_request"] is not None:
                return _final(row, "done", "failed", "no contact card: the address is gone")
            waited = (
                (datetime.now(UTC) - row["waiting_since"]).total_seconds()
                if row["waiting_since"]
                else 0.0
            )
            if waited > s.notifier_contact_wait_seconds:
                return _final(row, "dead", "failed", "no (new enough) contact card arrived in time")
            return result_of(
                row,
                "pending",
                reason="waiting for the contact card",
                delay=contact_wait_delay(s, waited),
                waiting=True,
            )
        if row["recipient"] == "guardian" and row["guardian_email"] is None:
            return _final(row, "dead", "failed", "the contact card names no guardian")
        if row["recipient"] == "pending" and not row["pending_current"]:
            reason = "the address to confirm was replaced or withdrawn since"
            return _final(row, "dead", "failed", reason)
        if row["recipient"] == "previous" and row["email"] is None:
            return _final(row, "dead", "failed", "the replaced address is no longer kept")
        if row["address_current"]:
            return _final(row, "done", "suppressed", "the replaced address is the account's again")
        why = suppression_reason(
            row["category"],
            Recipient(
                age_band=row["age_band"],
                marketing_email=row["marketing_email"],
                tracking_opt_out=row["tracking_opt_out"],
                active=row["active"],
                suppressed=row["suppressed"],
            ),
        )
        if why is not None:
            return _final(row, "done", "suppressed", why)
        try:
            return Job(row, await self._compose(row))
        except SubjectShredded:
            return _final(row, "done", "failed", "the subject was erased")
        except OUTAGES as exc:  # the vault's database: waited out, like any outage
            delay = backoff_seconds(
                row["attempts"] + 1, s.notifier_retry_base_seconds, s.notifier_retry_max_seconds
            )
            reason = f"outage while composing: {type(exc).__name__}"
            return result_of(row, "pending", reason=reason, delay=delay)
        except Exception as exc:  # a template that cannot render is a dead letter
            return _final(row, "dead", "refused", f"cannot render: {type(exc).__name__}")

    async def _compose(self, row: Any) -> OutgoingEmail:
        s = self.settings
        uid, recipient = row["user_id"], row["recipient"]
        name = ""  # never printed to a guardian or an unconfirmed address: not opened
        if recipient == "guardian":
            address = await self._vault.open(
                uid, row["guardian_email"], purpose=handlers.GUARDIAN_PURPOSE
            )
        elif recipient == "pending":
            address = await self._vault.open(uid, row["email"], purpose=handlers.PENDING_PURPOSE)
        else:
            address = await self._vault.open(uid, row["email"], purpose=handlers.EMAIL_PURPOSE)
            name = await self._vault.open(uid, row["name"], purpose=handlers.NAME_PURPOSE)
        category = row["category"]
        url = unsubscribe_url(s, row["address_index"], category)
        rendered = self._renderer.email(
            row["template"],
            category=category,
            params=row["params"],
            name=greeting_name(row["template"], recipient, row["active"], name),
            unsubscribe_url=url,
            footer=self._footer,
        )
        mailto = unsubscribe_mailto(s, row["address_index"], category)
        return OutgoingEmail(
            category=category,
            sender=s.notifier_from_marketing
            if category == "marketing"
            else (s.notifier_from_transactional),
            reply_to=s.notifier_reply_to,
            to=address,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            unsubscribe_url=url,
            headers={
                "List-Unsubscribe": f"<{url}>, <{mailto}>",
                "List-Unsubscribe-Post": ONE_CLICK,
                "List-Id": s.notifier_list_id,
                "Auto-Submitted": "auto-generated",
                "X-IMT-Category": category,
            },
        )

    # -- sending -----------------------------------------------------------------------

    async def _send_loop(self, number: int) -> None:
        transport = GatedTransport(self._transport_factory(), self._policy)
        try:
            while True:
                job = await self._queue.get()
                self._space.ring()
                self._in_flight += 1
                handed_over = False

                async def hand_over(row: Any = job.row) -> None:
                    nonlocal handed_over
                    await self._hand_overs.mark(lease_of(row))
                    handed_over = True
                    crash_point("notifier.after_hand_over")

                try:
                    await self._pace.acquire()
                    result = await self._send(transport, job, hand_over)
                except Exception as exc:  # a fault of ours: this sender goes on with the rest
                    log.exception(
                        "sender %d: unexpected error on delivery %s", number, job.row["id"]
                    )
                    result = self._unexpected(job.row, exc, handed_over)
                    transport = await self._reconnect(transport)  # its state is unknown
                finally:
                    self._in_flight -= 1
                    self._queue.task_done()
                if result is not None:
                    self._add_result(result)
                if self._drained():
                    self._recorded.ring()  # all sent: record now, not at the next tick
        finally:
            await transport.close()

    async def _reconnect(self, transport: GatedTransport) -> GatedTransport:
        with contextlib.suppress(Exception):
            await transport.close()
        return GatedTransport(self._transport_factory(), self._policy)  # connects lazily

    def _unexpected(self, row: Any, exc: Exception, handed_over: bool) -> store.Result:
        """An error no rule foresaw: in doubt once handed over (unless the transport says
        the message never left), else retried with back-off."""
        why = f"unexpected error: {type(exc).__name__}"
        if handed_over and not isinstance(exc, NotSent):
            return _in_doubt(row, why)
        attempts = row["attempts"] + 1
        if attempts >= self.settings.notifier_max_attempts:
            return _final(row, "dead", "failed", f"gave up after {attempts}: {why}", True)
        s = self.settings
        delay = backoff_seconds(
            attempts, s.notifier_retry_base_seconds, s.notifier_retry_max_seconds
        )
        return result_of(row, "pending", reason=why, delay=delay, attempted=True)

    async def _send(
        self, transport: GatedTransport, job: Job, hand_over: Callable[[], Awaitable[None]]
    ) -> store.Result | None:
        """The outcome of one attempt; None if the hand-over was refused: the lease was lost
        (another sender has it) or the address unsubscribed since (the next lease records
        the suppression)."""
        row = job.row
        try:
            await transport.send(job.email, message_id(row), hand_over)
            crash_point("notifier.after_accepted")
        except store.LeaseLost as exc:
            log.warning("sender: %s", exc)
            return None
        except InDoubt as exc:
            return _in_doubt(row, str(exc))
        except OUTAGES as exc:  # the hand-over could not be recorded: nothing was sent
            delay = backoff_seconds(
                row["attempts"] + 1,
                self.settings.notifier_retry_base_seconds,
                self.settings.notifier_retry_max_seconds,
            )
            reason = f"hand-over not recorded: {type(exc).__name__}"
            return result_of(row, "pending", reason=reason, delay=delay)
        except Refused as exc:
            # One that the gate's own error made: its traceback, for the bug's fix.
            fault = exc.__cause__ is not None
            log.warning("gate refused %s: %s", row["template"], exc, exc_info=fault)
            return _final(row, "dead", "refused", f"compliance gate: {exc}", attempted=False)
        except PermanentFailure as exc:
            return _final(row, "dead", "failed", str(exc), attempted=True)
        except TemporaryFailure as exc:
            attempts = row["attempts"] + 1
            if attempts >= self.settings.notifier_max_attempts:
                gave_up = _final(row, "dead", "failed", f"gave up after {attempts}: {exc}", True)
                return dataclasses.replace(gave_up, replayable=True)
            delay = backoff_seconds(
                attempts,
                self.settings.notifier_retry_base_seconds,
                self.settings.notifier_retry_max_seconds,
            )
            return result_of(row, "pending", reason=str(exc), delay=delay, attempted=True)
        self.sent += 1
        return _final(row, "done", "sent", None, attempted=True)

    # -- recording ---------------------------------------------------------------------

    def _add_result(self, result: store.Result) -> None:
        self._results.append(result)
        if len(self._results) >= RECORD_BATCH:
            self._recorded.ring()

    def _drained(self) -> bool:
        """Nothing more is due, queued or being sent: what is pending is all there is."""
        return self._nothing_due and not self._in_flight and self._queue.empty()

    async def _record_loop(self) -> None:
        while not self._sending_done:
            # Checked, not only rung: a ring while the last batch was being written
            # would otherwise wait out the whole tick.
            due = len(self._results) >= RECORD_BATCH or (self._results and self._drained())
            if not due:
                await self._recorded.wait(0.1)
            try:
                await self._record_pending()
            except OUTAGES as exc:
                log.warning("sender: outage while recording (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("sender: a batch of outcomes could not be recorded")
                await self._record_one_by_one()

    async def _record_one_by_one(self) -> None:
        """Isolate what a batch could not record: the rest is recorded, the culprit dropped.

        A dropped outcome leaves its delivery leased: when the lease ends it is leased
        again, or, if it was handed to the SMTP server, becomes a dead letter in doubt.
        Nothing is sent twice and nothing is lost.
        """
        batch, self._results = self._results, []
        for number, result in enumerate(batch):
            try:
                await record(self._pool, [result])
            except OUTAGES:
                self._results = batch[number:] + self._results
                await asyncio.sleep(1.0)
                return
            except Exception:
                log.exception("sender: outcome of delivery %s dropped", result.delivery_id)
                self.dropped += 1
            except BaseException:  # cancelled (stopping): what is left is recorded at exit
                self._results = batch[number:] + self._results
                raise
            else:
                self.finished += result.status != "pending"

    async def _record_pending(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            await record(self._pool, batch)
        except BaseException:
            self._results = batch + self._results  # kept: recorded on the next try
            raise
        self.finished += sum(1 for r in batch if r.status != "pending")

    async def _release_queued(self) -> None:
        rows = []
        while not self._queue.empty():
            rows.append(self._queue.get_nowait().row)
            self._queue.task_done()
        if rows:
            with contextlib.suppress(*OUTAGES):
                async with self._pool.acquire() as conn:
                    await conn.execute(
                        "UPDATE deliveries d SET status = 'pending', next_attempt_at = now()"
                        " FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, lease_until)"
                        " WHERE d.id = u.id AND d.status = 'sending'"
                        " AND d.next_attempt_at = u.lease_until",
                        [r["id"] for r in rows],
                        [r["lease_until"] for r in rows],
                    )


async def run_supervised(main: Awaitable[None], helpers: list[asyncio.Task[None]]) -> None:
    """Run ``main``; if a helper ends first (it never should), fail loudly, not silently.

    A sender or the recorder that died would leave the worker alive but mailing no one:
    the worker exits instead, and its supervisor restarts it.
    """
    task = asyncio.ensure_future(main)
    try:
        done, _ = await asyncio.wait([task, *helpers], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled: ``main`` must not go on leasing on its own
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if task in done:
        await task
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ended = next(iter(done))
    cause = None if ended.cancelled() else ended.exception()
    raise RuntimeError(f"sender: its {ended.get_name()} ended") from cause


async def record(pool: asyncpg.Pool, results: list[store.Result]) -> None:
    """Outcomes, their NoticeDelivered events and any erasure, in one transaction.

    An outcome whose lease another sender has taken since is dropped with its event:
    that sender's outcome is the one recorded.
    """
    async with pool.acquire() as conn, conn.transaction():
        recorded = await store.record_results(conn, results)
        final = [r for r in recorded if r.outcome is not None and r.status != "pending"]
        await add_envelopes(conn, NOTIFIER_DELIVERIES.name, _delivered(final))
        for r in final:
            # The final "your data was deleted" email erases the rows once it went, or
            # cannot go. One given up on for now keeps them, its dead letter included:
            # an operator replays it, or retries the escalated request in the deletion
            # service to erase without it (handlers.start_erasure).
            if r.erasure_request is not None and not r.replayable:
                await handlers.finish_erasure(conn, r.erasure_request)


def _delivered(final: list[store.Result]) -> list[Any]:
    return [
        envelope_for(
            NoticeDelivered(
                notice_id=r.notice_id,
                user_id=r.user_id,
                channel="email",
                outcome=r.outcome,
                reason=r.reason,
            ),
            source="notifier",
            subject=str(r.user_id),
        )
        for r in final
    ]


def result_of(
    row: Any,
    status: str,
    *,
    outcome: str | None = None,
    reason: str | None = None,
    delay: float = 0.0,
    attempted: bool = False,
    waiting: bool = False,
) -> store.Result:
    """What became of a leased ``row``, recorded under the lease it was leased with."""
    return store.Result(
        delivery_id=row["id"],
        notice_id=row["notice_id"],
        user_id=row["user_id"],
        status=status,
        outcome=outcome,
        reason=reason,
        delay_seconds=delay,
        smtp_attempted=attempted,
        waiting_for_contact=waiting,
        erasure_request=row["erasure_request"],
        template=row["template"],
        params=dict(row["params"]),
        lease_until=row["lease_until"],
    )


def _final(
    row: Any, status: str, outcome: str, reason: str | None, attempted: bool = False
) -> store.Result:
    return result_of(row, status, outcome=outcome, reason=reason, attempted=attempted)


def _in_doubt(row: Any, why: str) -> store.Result:
    final = _final(row, "dead", "failed", IN_DOUBT.format(why=why), attempted=True)
    return dataclasses.replace(final, in_doubt=True, replayable=True)
