"""The accounts side of an erasure on real PostgreSQL: what is forwarded to recipients,
what is kept as proof of disclosures, and which invoices the books still need."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from services.accounts import store, throttling
from services.accounts.config import AccountsSettings
from services.accounts.context import Context
from services.accounts.domain.invoices import last_spent_issue
from services.accounts.handlers import erase_subject
from services.accounts.recipients import DEVICE_FIELDS
from services.accounts.routes import me, operators
from shared.auth.tokens import Claims
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.accounts import RecipientErasureRequested, SessionsRevoked
from shared.events.catalogue.deletion import UNDER_LEGAL_HOLD, EraseSubject, SubjectErased
from shared.events.topics import ACCOUNTS_RECIPIENT_ERASURES, ACCOUNTS_SESSIONS
from shared.observability import Metrics, Problem, problem_type
from shared.service import Runtime
from shared.vault import Vault
from tests.integration.accounts.users import (
    accounts_context,
    operator_claims,
    stored_deletion_request,
    stored_operator,
    stored_user,
)

PURPOSE = "offers"
FIRST = ("security_audit", "financial_records", "disclosure_log")
RELEASE = ("security_audit",)


async def _recipient(conn: Connection, kind: str) -> uuid.UUID:
    recipient_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        recipient_id,
        f"{kind} {recipient_id}",
        kind,
        PURPOSE,
        ["user_id", "email", *DEVICE_FIELDS],
        uuid.uuid4(),
    )
    return recipient_id


async def _consent(
    conn: Connection, user_id: uuid.UUID, recipient_id: uuid.UUID, granted: bool
) -> None:
    await conn.execute(
        "INSERT INTO consents (user_id, recipient_id, purpose, granted) VALUES ($1, $2, $3, $4)",
        user_id,
        recipient_id,
        PURPOSE,
        granted,
    )


async def _disclose(
    conn: Connection, user_id: uuid.UUID, recipient_id: uuid.UUID, fields: Sequence[str]
) -> uuid.UUID:
    export_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO disclosures (export_id, recipient_id, user_id, fields, operator_id)"
        " VALUES ($1, $2, $3, $4, $5)",
        export_id,
        recipient_id,
        user_id,
        list(fields),
        uuid.uuid4(),
    )
    return export_id


async def _erase(
    pool: asyncpg.Pool, vault: Vault, subject: uuid.UUID, retain: tuple[str, ...]
) -> SubjectErased:
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=subject, retain_categories=retain)
    async with pool.acquire() as conn, conn.transaction():
        return await erase_subject(conn, vault, command)


async def _forwarded(pool: asyncpg.Pool) -> list[RecipientErasureRequested]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq",
        ACCOUNTS_RECIPIENT_ERASURES.name,
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [e for e in events if isinstance(e, RecipientErasureRequested)]


async def _revocations(pool: asyncpg.Pool) -> list[SessionsRevoked]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", ACCOUNTS_SESSIONS.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [e for e in events if isinstance(e, SessionsRevoked)]


async def _waits_for_a_lock(pool: asyncpg.Pool, pid: int, timeout: float = 10.0) -> bool:
    """Whether the backend ``pid`` comes to wait for a lock within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        waiting = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)"
        if await pool.fetchval(waiting, pid):
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.promise("P-19")
async def test_a_device_erasure_waits_for_an_export_that_read_the_device_and_forwards_it(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    device_id = uuid.uuid4()
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        processor = await _recipient(conn, "processor")
        await conn.execute(
            "INSERT INTO devices (id, user_id, model, damage_state) VALUES ($1, $2, $3, 'water')",
            device_id,
            user_id,
            b"sealed-model",
        )
    device_read = asyncio.Event()
    erasure_pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def export() -> tuple[bool, uuid.UUID]:
        # As an export does: the user's row held, the device read, the disclosure logged
        # at the end of a long transaction.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR SHARE", user_id)
            assert [d["id"] for d in await store.devices_of(conn, user_id)] == [device_id]
            device_read.set()
            waited = await _waits_for_a_lock(pool, await asyncio.wait_for(erasure_pid, 30))
            export_id = await _disclose(conn, user_id, processor, ["user_id", "device_models"])
        return waited, export_id

    async def erase() -> SubjectErased:
        command = EraseSubject(
            request_id=uuid.uuid4(), subject_id=user_id, scope="device", item_id=device_id
        )
        async with pool.acquire() as conn, conn.transaction():
            erasure_pid.set_result(conn.get_server_pid())
            return await erase_subject(conn, vault, command)

    exporting = asyncio.create_task(export())
    await device_read.wait()
    # The user deletes the device meanwhile: setting it aside waits for no export.
    async with pool.acquire() as conn, conn.transaction():
        assert await asyncio.wait_for(store.set_aside_device(conn, user_id, device_id), 10)
    (waited, export_id), receipt = await asyncio.gather(exporting, erase())

    assert waited  # the erasure waited for the export to commit...
    assert receipt.erased["erasing_items"] == 1
    assert receipt.erased["forwarded_to_recipients"] == 1  # ...and saw its disclosure
    (told,) = await _forwarded(pool)
    assert (told.recipient_id, told.export_ids, told.reason, told.fields) == (
        processor, (export_id,), "item_deleted", DEVICE_FIELDS,
    )  # fmt: skip


@pytest.mark.promise("P-18")
async def test_the_consents_disclosures_were_made_under_are_kept_with_the_disclosure_log(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        given, never_given = await _recipient(conn, "partner"), await _recipient(conn, "processor")
        await _consent(conn, user_id, given, True)
        await _consent(conn, user_id, never_given, True)
        await _disclose(conn, user_id, given, ["user_id", "email"])
        await _consent(conn, user_id, given, False)

    first = await _erase(pool, vault, user_id, FIRST)
    assert first.erased["users"] == 1
    assert first.erased["consents"] == 1  # the one no disclosure needs as proof
    assert first.retained_anonymised["consents"] == 2
    kept = await pool.fetch("SELECT * FROM consents WHERE user_id = $1 ORDER BY id", user_id)
    assert [(r["recipient_id"], r["granted"]) for r in kept] == [(given, True), (given, False)]
    # Ids, purpose, the choice and its time: nothing else of the subject is kept.
    assert set(kept[0].keys()) == {"id", "user_id", "recipient_id", "purpose", "granted", "at"}

    again = await _erase(pool, vault, user_id, FIRST)  # a resend keeps them
    assert (again.erased["consents"], again.retained_anonymised["consents"]) == (0, 2)

    release = await _erase(pool, vault, user_id, RELEASE)
    assert release.erased["consents"] == 2
    assert release.erased["disclosures"] == 1
    assert "consents" not in release.retained_anonymised
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE user_id = $1", user_id) == 0


async def test_without_the_disclosure_log_every_consent_goes_with_the_account(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        given, never_given = await _recipient(conn, "partner"), await _recipient(conn, "partner")
        await _consent(conn, user_id, given, True)
        await _consent(conn, user_id, never_given, True)
        await _disclose(conn, user_id, given, ["user_id"])

    receipt = await _erase(pool, vault, user_id, ("security_audit", "financial_records"))
    assert receipt.erased["consents"] == 2
    assert "consents" not in receipt.retained_anonymised
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE user_id = $1", user_id) == 0


async def _open_session(conn: Connection, principal_id: uuid.UUID) -> uuid.UUID:
    session_id = uuid.uuid4()
    expires = datetime.now(UTC) + timedelta(days=1)
    await store.open_session_with_refresh(
        conn, session_id, principal_id, "user", uuid.uuid4().bytes, expires
    )
    return session_id


async def test_an_erased_accounts_open_sessions_are_published_as_revoked(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """The other APIs learn of ended sessions only from the sessions topic: without the
    event they would take the erased user's access token until it expires."""
    async with pool.acquire() as conn:
        user_id, bystander = await stored_user(conn), await stored_user(conn)
        opened = {await _open_session(conn, user_id), await _open_session(conn, user_id)}
        await _open_session(conn, bystander)
        logged_out = await _open_session(conn, user_id)
        await store.revoke_session(conn, logged_out, "logout")
    published_before = len(await _revocations(pool))

    started = datetime.now(UTC).replace(microsecond=0)
    receipt = await _erase(pool, vault, user_id, FIRST)

    (revoked,) = (await _revocations(pool))[published_before:]
    assert (revoked.principal_id, revoked.reason) == (user_id, "principal-gone")
    assert set(revoked.session_ids) == opened  # the logged-out one was published then
    # Every token of the user, whichever session it names, ends.
    assert revoked.issued_before is not None
    assert revoked.issued_before >= started
    assert receipt.erased["sessions"] == 3
    bystanders = "SELECT count(*) FROM sessions WHERE principal_id = $1 AND revoked_at IS NULL"
    assert await pool.fetchval(bystanders, bystander) == 1


async def test_an_erasure_takes_the_counters_keyed_by_the_accounts_id(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """Re-entered passwords and address changes are counted under a fingerprint of the
    user's id: kept after the account, they would only say on which days it did so."""
    async with pool.acquire() as conn:
        user_id, bystander = await stored_user(conn), await stored_user(conn)
        keys = [
            throttling.reauth_key(vault, user_id),
            throttling.address_change_key(vault, user_id),
            throttling.address_change_key(vault, bystander),
        ]
        for key in keys:
            await store.lock_throttle(conn, key)
    receipt = await _erase(pool, vault, user_id, FIRST)
    assert receipt.erased["login_throttle"] == 2
    left = await pool.fetch("SELECT key FROM login_throttle WHERE key = ANY($1::bytea[])", keys)
    assert [bytes(r["key"]) for r in left] == [keys[2]]


async def _invoice(conn: Connection, user_id: uuid.UUID, issued_on: date) -> str:
    number = f"INV-{uuid.uuid4().hex[:12]}"
    recorded = await store.insert_invoice(
        conn, id=uuid.uuid4(), user_id=user_id, number=number, amount=Decimal("129.90"),
        currency="EUR", issued_on=issued_on, repair_reference="RPR-1", payment_provider="stripe",
        provider_reference="pi_1", description=None,
    )  # fmt: skip
    assert recorded
    return number


@pytest.mark.promise("P-13")
async def test_an_erasure_keeps_no_invoice_whose_period_ended_since_its_issue(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    spent = last_spent_issue(datetime.now(UTC).date())
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        await _invoice(conn, user_id, spent)  # issued a whole period ago: it goes
        kept = {
            await _invoice(conn, user_id, spent + timedelta(days=2)),
            await _invoice(conn, user_id, datetime.now(UTC).date()),
        }
        bystander = await _invoice(conn, await stored_user(conn), spent)

    first = await _erase(pool, vault, user_id, FIRST)
    assert first.erased["invoices"] == 1
    assert first.retained_anonymised["invoices"] == 2
    rows = await pool.fetch("SELECT number, user_id FROM invoices")
    assert {r["number"] for r in rows} == {*kept, bystander}
    assert all(r["user_id"] is None for r in rows if r["number"] in kept)

    again = await _erase(pool, vault, user_id, FIRST)  # a resend erases no kept invoice
    assert "invoices" not in again.erased
    assert again.retained_anonymised["invoices"] == 2


async def test_the_receipt_dates_the_end_of_the_youngest_kept_invoices_period(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """Each invoice is needed a period from its issue: once the youngest kept one's has
    ended, nothing kept needs the release to wait the period counted from the erasure."""
    today = datetime.now(UTC).date()
    spent = last_spent_issue(today)
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        await _invoice(conn, user_id, spent + timedelta(days=3))
        await _invoice(conn, user_id, spent + timedelta(days=10))  # the youngest
        unbilled = await stored_user(conn)
        await _invoice(conn, await stored_user(conn), today)  # a bystander's

    first = await _erase(pool, vault, user_id, FIRST)
    assert first.retained_anonymised["invoices"] == 2
    assert first.retained_until == {"financial_records": today + timedelta(days=10)}
    again = await _erase(pool, vault, user_id, FIRST)  # found again through the key
    assert again.retained_until == first.retained_until
    assert (await _erase(pool, vault, unbilled, FIRST)).retained_until == {}


async def test_under_a_legal_hold_an_erasure_lets_no_invoice_go_early(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    spent = last_spent_issue(datetime.now(UTC).date())
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        held = await _invoice(conn, user_id, spent)  # its period ended: a hold keeps it

    erased = await _erase(pool, vault, user_id, (*FIRST, UNDER_LEGAL_HOLD))
    assert "invoices" not in erased.erased
    assert erased.retained_anonymised["invoices"] == 1
    row = await pool.fetchrow("SELECT user_id FROM invoices WHERE number = $1", held)
    assert row is not None
    assert row["user_id"] is None  # kept, anonymised, until the release


@pytest.mark.promise("P-18")
async def test_withdrawing_a_processors_consent_asks_it_to_erase_what_it_was_given(
    pool: asyncpg.Pool, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        processor, other = await _recipient(conn, "processor"), await _recipient(conn, "processor")
        for recipient in (processor, other):
            await _consent(conn, user_id, recipient, True)
        export_id = await _disclose(conn, user_id, processor, ["user_id", "email"])
        await _disclose(conn, user_id, other, ["user_id"])
    runtime = Runtime(settings, "accounts", pool, Metrics("accounts-test", CollectorRegistry()))
    ctx = Context(settings=AccountsSettings(environment="test"), runtime=runtime)
    now = int(datetime.now(UTC).timestamp())
    claims = Claims(sub=str(user_id), sid=str(uuid.uuid4()), kind="user", iat=now, exp=now + 300)

    withdrawn = await me.set_consent(processor, me.ConsentIn(granted=False), claims, ctx)
    assert withdrawn.granted is False
    (told,) = await _forwarded(pool)  # that processor only, with the export it was given
    assert (told.recipient_id, told.export_ids, told.reason, told.fields) == (
        processor, (export_id,), "consent_withdrawn", (),
    )  # fmt: skip
    await me.set_consent(processor, me.ConsentIn(granted=False), claims, ctx)
    assert len(await _forwarded(pool)) == 1  # withdrawn again: nothing more to erase


@pytest.mark.promise("P-15")
async def test_an_erasure_closes_the_deletions_under_way_and_keeps_the_others_as_they_were(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    """A cancelled request, or one a second operator never approved, is the proof of
    what happened: the erasure leaves its status and time, and clears every reason."""
    async with pool.acquire() as conn:
        requester = await stored_operator(conn, "requester-password")
        approver = await stored_operator(conn, "approver-password")
        user_id = await stored_user(conn)
        ids = {
            "cancelled": await stored_deletion_request(conn, user_id, "cancelled", None),
            "pending_approval": await stored_deletion_request(
                conn, user_id, "pending_approval", requester
            ),
            "confirmed": await stored_deletion_request(conn, user_id, "confirmed", requester),
        }
        before = {r["id"]: r for r in await conn.fetch("SELECT * FROM deletion_requests")}

    receipt = await _erase(pool, vault, user_id, FIRST)
    assert receipt.retained_anonymised["deletion_requests"] == 3
    after = {r["id"]: r for r in await pool.fetch("SELECT * FROM deletion_requests")}
    assert {status: after[i]["status"] for status, i in ids.items()} == {
        "cancelled": "cancelled",
        "pending_approval": "pending_approval",
        "confirmed": "erased",
    }
    assert all(row["reason"] is None for row in after.values())
    for kept in (ids["cancelled"], ids["pending_approval"]):
        assert after[kept]["updated_at"] == before[kept]["updated_at"]

    # The request never approved stays so: there is no account left for it to delete.
    ctx = accounts_context(settings, pool, vault)
    body = operators.OperatorReauthentication(password="approver-password")
    with pytest.raises(Problem) as refused:
        await operators.approve_user_deletion(
            ids["pending_approval"], body, ctx, operator_claims(approver)
        )
    assert (refused.value.status, refused.value.type) == (409, problem_type("account-erased"))
    status = "SELECT status FROM deletion_requests WHERE id = $1"
    assert await pool.fetchval(status, ids["pending_approval"]) == "pending_approval"
