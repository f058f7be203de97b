"""Deletion promises, end to end through the real services (accounts, notifier,
analytics, deletion), real Kafka, PostgreSQL, pg_dump/pg_restore and the vault.

Run with IMT_TEST_SERVICES unset (every service starts); with a narrower selection these
tests are skipped, never passed.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local import gateway
from deploy.local.layout import Layout
from services.deletion import backups
from services.deletion.config import DeletionSettings
from services.deletion.handlers import RELEASE_NAMESPACE
from services.deletion.verifier import contact_cards_left
from services.notifier.config import NotifierSettings
from services.notifier.handlers import erasure_notice_id
from shared.config import PlatformSettings
from shared.databases import SERVICE_DATABASES, VAULT_DATABASE
from shared.events.topics import all_topics
from shared.tracing import trace_id_of
from shared.vault import SubjectShredded, Vault
from tests.e2e.accounts.support import (
    BusTail,
    User,
    active_user,
    admin,
    new_operator,
    read_topics_from_beginning,
    record_invoice,
    sign_up,
    unique_email,
    verify,
)
from tests.e2e.deletion.conftest import FINANCIAL_RETENTION_SECONDS, TEST_RULES_SUFFIX
from tests.e2e.deletion.support import (
    API,
    GRACE_SECONDS,
    officer,
    status,
    token_headers,
    wait_for_stage,
)
from tests.support.cards import opened
from tests.support.clock import a_childs_birth_date
from tests.support.mailbox import Mailbox, eventually

ACCOUNTS = "/api/accounts"


async def _device(client: httpx.AsyncClient, user: User, key: str | None = None) -> str:
    response = await client.post(
        f"{ACCOUNTS}/me/devices",
        json={"model": "Phone 12", "damage_state": "cracked_screen"},
        headers=user.headers if key is None else {**user.headers, "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _request_deletion(client: httpx.AsyncClient, user: User) -> str:
    response = await client.post(
        f"{ACCOUNTS}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _fetch(database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """A test's read of a service database through the maintenance role (read-only)."""
    dsn = DeletionSettings(environment="test").admin_dsn(database)
    conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _rows(settings: PlatformSettings, database: str, sql: str, *args: Any) -> int:
    return int((await _fetch(database, sql, *args))[0][0])


@pytest.mark.promise("P-15")
async def test_a_request_cancelled_in_grace_erases_nothing(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    user = await active_user(client, bus)
    control = await active_user(client, bus)  # the same request, not cancelled
    device = await _device(client, user)
    request_id = await _request_deletion(client, user)
    control_request = await _request_deletion(client, control)
    cancel = await client.post(
        f"{ACCOUNTS}/me/deletion-requests/{request_id}/cancel", headers=user.headers
    )
    assert cancel.status_code == 200, cancel.text
    await wait_for_stage(client, user.id, request_id, ("cancelled",), timeout=30)

    # The request asked at the same time and left alone is erased and shredded: had the
    # cancel been ignored, this one would have been too by now.
    erased = ("shredded", "backups_pending", "complete")
    await wait_for_stage(client, control.id, control_request, erased, timeout=240)
    assert await vault.is_shredded(control.id)
    shown = await wait_for_stage(client, user.id, request_id, ("cancelled",))
    entered = [s["stage"] for s in shown["stages"]]
    assert entered[0] == "requested"
    assert entered[-1] == "cancelled"
    assert set(entered) <= {"requested", "grace", "cancelled"}  # never reached erasing
    profile = await client.get(f"{ACCOUNTS}/me", headers=user.headers)
    assert profile.status_code == 200
    assert profile.json()["name"] == user.name
    devices = await client.get(f"{ACCOUNTS}/me/devices", headers=user.headers)
    assert [d["id"] for d in devices.json()] == [device]
    assert not await vault.is_shredded(user.id)
    receipts = [r for r in bus.records if r.topic == "deletion.receipts" and r.key == user.id]
    assert receipts == []  # no store was ever asked to erase, so none answered
    assert await bus.notice(user.id, "deletion_cancelled")


@pytest.mark.promise("P-15")
async def test_an_account_is_erased_only_after_accounts_closed_its_cancel_window(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """At the end of grace the deletion service waits in ``holds`` until accounts, where
    the user cancels, has closed the window (``deletion.confirmed``); only then does it
    erase. (Accounts' 409 for a later cancel: tests/e2e/accounts.)"""
    user = await active_user(client, bus)
    request_id = await _request_deletion(client, user)
    confirmed = await bus.event(
        "deletion.confirmed.", user.id, timeout=GRACE_SECONDS + 60, request_id=request_id
    )
    assert confirmed["source"] == "accounts"
    shown = await wait_for_stage(
        client, user.id, request_id, ("shredded", "backups_pending", "complete")
    )
    done = {s["stage"]: s["done_at"] for s in shown["stages"]}
    # Erasing began (holds was done) only after accounts had closed the window.
    assert datetime.fromisoformat(confirmed["time"]) <= datetime.fromisoformat(done["holds"])
    assert not [
        r for r in bus.records
        if r.key == user.id and r.value is not None
        and r.value["type"].startswith("deletion.cancelled.")
    ]  # fmt: skip


def _day(moment: datetime) -> str:
    """A moment's UTC day as a reader sees it in the email (``8 April 2027``)."""
    day = moment.astimezone(UTC)
    return f"{day.day} {calendar.month_name[day.month]} {day.year}"


@pytest.mark.promise("P-16")
async def test_the_final_email_dates_the_backups_and_links_to_the_stages(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Once the stores are told to erase, accounts deletes the user: the status page
    behind a sign-in is out of reach for good. The last email is what they keep: the
    date the status page showed for ``complete`` (the last backup holding them gone),
    the reference, and a link that shows the stages without a sign-in, and then the
    certificate."""
    user = await active_user(client, bus)
    request_id = await _request_deletion(client, user)
    before = await wait_for_stage(client, user.id, request_id, ("requested", "grace"), 60)
    shown = {s["stage"]: s["expected_by"] for s in before["stages"]}
    complete = datetime.fromisoformat(shown["complete"])
    # The erasure starts as the grace period ends (give or take the ticker and accounts'
    # confirmation, seconds): the date mailed is the day shown, or the next if it was
    # minutes from midnight.
    days = {_day(complete), _day(complete + timedelta(minutes=10))}

    mailbox = Mailbox()
    try:
        mails = await eventually(
            lambda: mailbox.to(user.email),
            lambda found: any(m["Subject"] == "Your data has been deleted" for m in found),
            timeout=GRACE_SECONDS + 120,
        )
    finally:
        await mailbox.close()
    [final] = [m for m in mails if m["Subject"] == "Your data has been deleted"]
    text = final.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = final.get_body(("html",)).get_content()  # type: ignore[union-attr]
    said = re.search(r"will have expired by (\d{1,2} [A-Z][a-z]+ \d{4}) \(UTC\)", text)
    assert said is not None, text
    assert said.group(1) in days, (said.group(1), shown["complete"])
    assert said.group(1) in html
    # The command the notifier mailed it from carried the same day.
    command = await bus.event("subject.erase.", user.id, request_id=request_id)
    assert _day(datetime.fromisoformat(command["data"]["backups_gone_by"])) == said.group(1)
    assert f"Your reference for this deletion: {request_id}." in text
    assert request_id in html
    assert "encrypted with a key of your own" in text
    assert "financial records of your repairs (invoices)" in text

    # The link: in both parts, to our site, its secret in the fragment.
    site = NotifierSettings(environment="test").notifier_public_base_url
    link = re.search(rf"{re.escape(site)}/deletion-status#token=([A-Za-z0-9_\-]+)", text)
    assert link is not None, text
    assert link.group(0) in html
    token = link.group(1)
    # Accounts deletes the user (tests/e2e/accounts: no sign-in works after): the link
    # shows the deletion to whoever holds it, with no token.
    followed = await client.post(f"{API}/status-links", json={"token": token})
    assert followed.status_code == 200, followed.text
    shown_now = followed.json()["status"]
    assert shown_now["request_id"] == request_id
    assert shown_now["stage"] in ("erasing", "shredded", "backups_pending", "complete")
    assert [s["stage"] for s in shown_now["stages"]] == [s["stage"] for s in before["stages"]]
    # The secret left the notifier's store once its one email was done.
    [notice] = await _fetch(
        "notifier", "SELECT params FROM notices WHERE notice_id = $1",
        erasure_notice_id(uuid.UUID(request_id)),
    )  # fmt: skip
    assert token not in str(notice["params"])
    assert request_id in str(notice["params"])  # the control: the row read is the notice

    done = await wait_for_stage(client, user.id, request_id, ("complete",), timeout=240)
    followed = await client.post(f"{API}/status-links", json={"token": token})
    assert followed.status_code == 200, followed.text
    assert followed.json()["status"] == done | {"overdue": followed.json()["status"]["overdue"]}
    certificate = followed.json()["certificate"]
    assert certificate is not None
    assert certificate["digest"] == done["certificate_digest"]
    own = await client.get(
        f"{API}/me/requests/{request_id}/certificate", headers=token_headers(user.id)
    )
    assert own.json() == certificate

    # A link that names no mailed deletion is refused, as a JSON problem, all alike; and
    # so is this one, 90 days after the deletion was complete (it stays in the browser's
    # history): what 91 days would do to the request's completion time.
    await _age_completion(uuid.UUID(request_id), days=91)
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), request_id, token):
        refused = await client.post(f"{API}/status-links", json={"token": wrong})
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("/link-invalid")


async def _age_completion(request_id: uuid.UUID, *, days: int) -> None:
    """Move a complete request's completion back in time (the clock is what it stands
    for: no other column is touched)."""
    conn = await asyncpg.connect(DeletionSettings(environment="test").admin_dsn("deletion"))
    try:
        changed = await conn.execute(
            "UPDATE deletion_requests SET stage_entered_at = stage_entered_at"
            " - make_interval(days => $2) WHERE request_id = $1 AND stage = 'complete'",
            request_id,
            days,
        )
    finally:
        await conn.close()
    assert changed == "UPDATE 1"


async def test_one_trace_id_follows_a_deletion_from_the_click_to_every_stores_receipt(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """An operator or an auditor follows one request by one id: the gateway's id of the
    click is the trace id of what accounts published, of the commands the deletion
    service sent stage after stage (from its ticker, long after the click) and of each
    store's receipt. Another user's deletion runs under another."""
    user, other = await active_user(client, bus), await active_user(client, bus)
    request_id = await _request_deletion(client, user)
    other_request = await _request_deletion(client, other)
    done = ("shredded", "backups_pending", "complete")
    await wait_for_stage(client, user.id, request_id, done)
    await wait_for_stage(client, other.id, other_request, done)

    def of(request: str) -> list[dict[str, Any]]:
        return [
            r.value for r in bus.records
            if r.value is not None and r.value["data"].get("request_id") == request
        ]  # fmt: skip

    events = of(request_id)
    types = {e["type"] for e in events}
    assert {"deletion.requested.v1", "deletion.confirmed.v1", "subject.erase.v1"} <= types
    assert "deletion_stage.changed.v1" in types
    stores = {e["data"]["store"] for e in events if e["type"] == "subject.erased.v1"}
    assert {"accounts", "notifier", "analytics"} <= stores
    [trace] = {trace_id_of(e.get("traceparent")) for e in events}
    assert trace is not None
    [other_trace] = {trace_id_of(e.get("traceparent")) for e in of(other_request)}
    assert other_trace not in (None, trace)
    # The gateway logged the click under the same id: from there to the request's id.
    log = gateway.access_log(Layout.from_env())
    clicks = [
        json.loads(line) for line in log.read_text().splitlines() if f'"trace_id":"{trace}"' in line
    ]
    assert [(c["method"], c["path"]) for c in clicks] == [
        ("POST", f"{ACCOUNTS}/me/deletion-requests")
    ]


@pytest.mark.promise("P-12")
@pytest.mark.promise("P-14")
async def test_after_deletion_completes_the_verifier_finds_nothing_but_anonymised_rows(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    user = await active_user(client, bus)
    bystander = await active_user(client, bus)
    kept_device = await _device(client, bystander)
    await _device(client, user)
    await _device(client, user)
    said = f"My screen broke, call me on my mobile {uuid.uuid4().hex}"
    thread = await client.post(
        f"{ACCOUNTS}/me/requests",
        json={"category": "repair", "text": said},
        headers=user.headers,
    )
    assert thread.status_code == 201, thread.text
    operator = await new_operator(client, await admin(client), "support")
    reply = await client.post(
        f"{ACCOUNTS}/operator/requests/{thread.json()['id']}/replies",
        json={"text": "We will repair it"},
        headers=operator.headers,
    )
    assert reply.status_code == 201, reply.text
    for _ in range(300):  # the reply becomes an inbox item in the notifier
        inbox = await _rows(
            settings, "notifier", "SELECT count(*) FROM inbox_items WHERE user_id = $1",
            uuid.UUID(user.id),
        )  # fmt: skip
        if inbox:
            break
        await asyncio.sleep(0.2)
    assert inbox >= 1

    request_id = await _request_deletion(client, user)
    # The control: in grace, with every row of the subject still there, the same verifier
    # does find them (so its clean verdict below is a scan that found nothing, not a
    # scan that cannot find). Asked at once: the grace lasts GRACE_SECONDS.
    await wait_for_stage(client, user.id, request_id, ("requested", "grace"), timeout=60)
    early = await client.post(f"{API}/operator/requests/{request_id}/verify", headers=officer())
    assert early.status_code == 200, early.text
    assert early.json()["clean"] is False, early.json()
    assert early.json()["vault_key_shredded"] is False
    found = {f["place"]: f["kept_by_rule"] for f in early.json()["findings"]}
    for place in ("accounts.users.id", "accounts.devices.user_id", "accounts.requests.user_id",
                  "notifier.contacts.user_id", "notifier.inbox_items.user_id"):  # fmt: skip
        assert place in found, (place, early.json(), await status(client, user.id, request_id))
        assert found[place] is None, place  # personal data: no rule keeps it
    assert found.get("accounts.deletion_requests.user_id") == "disclosure_log", found
    # The contact card is found on its topic too, and every store was scanned: the
    # analytics database holds nothing of anyone's, so only its scan shows it was looked in.
    assert "kafka:accounts.contacts" in found, found
    scanned = set(early.json()["scanned"])
    for place in ("postgres:accounts", "postgres:notifier", "postgres:analytics",
                  "kafka:accounts.contacts"):  # fmt: skip
        assert place in scanned, (place, scanned)
    done = await wait_for_stage(client, user.id, request_id, ("complete",), timeout=240)

    assert all(s["done_at"] for s in done["stages"])
    certificate = await client.get(
        f"{API}/me/requests/{request_id}/certificate", headers=token_headers(user.id)
    )
    assert certificate.status_code == 200
    body = certificate.json()["certificate"]
    assert user.id not in str(body)
    assert {"accounts", "notifier", "analytics"} <= set(body["stores"])
    verdict = await client.post(f"{API}/operator/requests/{request_id}/verify", headers=officer())
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["clean"] is True, verdict.json()
    assert verdict.json()["vault_key_shredded"] is True
    # What a rule keeps is still found, and found kept: the scan saw the subject's id
    # where it may stay (the request's own record), and nowhere else.
    kept_by = {f["place"]: f["kept_by_rule"] for f in verdict.json()["findings"]}
    assert kept_by.get("accounts.deletion_requests.user_id") == "disclosure_log", kept_by
    assert all(kept_by.values()), kept_by
    subject = uuid.UUID(user.id)
    for database, sql in (
        ("accounts", "SELECT count(*) FROM users WHERE id = $1"),
        ("accounts", "SELECT count(*) FROM devices WHERE user_id = $1"),
        ("accounts", "SELECT count(*) FROM requests WHERE user_id = $1"),
        ("notifier", "SELECT count(*) FROM contacts WHERE user_id = $1"),
        ("notifier", "SELECT count(*) FROM inbox_items WHERE user_id = $1"),
    ):
        assert await _rows(settings, database, sql, subject) == 0, sql
    assert await contact_cards_left(DeletionSettings(environment="test"), [subject]) == set()
    assert await vault.is_shredded(subject)
    # Beyond the subject's ids: what they gave is readable nowhere, in clear.
    assert await _readable_anywhere(settings, [user.email, user.name, said]) == {}
    # The same scan does see what is in clear (the bystander's id): it can fail.
    seen = await _readable_anywhere(settings, [bystander.id])
    assert "kafka" in seen
    assert "accounts.users" in seen
    # The subject's id itself stays only where a rule keeps it (ids, dates and counts:
    # the audit trail, the deletion's own record and receipts, dedupe marks).
    kept = {where for where in await _readable_anywhere(settings, [user.id])
            if where != "kafka" and not where.endswith(".log")}  # fmt: skip
    assert kept <= ID_KEPT_BY_RULE, kept - ID_KEPT_BY_RULE
    # The subject's cards as they went over the bus (what an old segment, a mirror or
    # a consumer's copy holds) can no longer be opened; a live user's still can.
    cards = bus.sealed_cards(user.id)
    assert cards
    for data in cards:
        with pytest.raises(SubjectShredded):
            await opened(data)
    assert (await bus.card(bystander.id)).email == bystander.email
    # The other user is untouched.
    devices = await client.get(f"{ACCOUNTS}/me/devices", headers=bystander.headers)
    assert [d["id"] for d in devices.json()] == [kept_device]
    assert not await vault.is_shredded(bystander.id)


@pytest.mark.promise("P-26")
@pytest.mark.promise("P-13")
async def test_a_sign_up_never_completed_is_erased_everywhere_without_mailing_it(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    """A child's sign-up whose guardian never consented is not kept: once its links
    expired and the lapse period passed, accounts has it erased in every store. Its
    address was never confirmed, so nothing is mailed about it. A sign-up still within
    its period is left alone."""
    guardian = unique_email("guardian")
    child = await sign_up(client, birth_date=a_childs_birth_date(), guardian_email=guardian)
    waiting = await sign_up(client)  # signed up just now: not lapsed
    mailbox = Mailbox()
    try:
        # The links went out: the notifier holds the child's contact, and mail to the
        # child's address does arrive (so an erasure email would have been seen).
        before = await eventually(lambda: mailbox.to(child.email), lambda found: bool(found))
        await eventually(lambda: mailbox.to(guardian), lambda found: bool(found))
        subject = uuid.UUID(child.id)
        assert await _rows(
            settings, "notifier", "SELECT count(*) FROM contacts WHERE user_id = $1", subject
        ) == 1  # fmt: skip
        # The control of the topic check below: the card is there to be found.
        config = DeletionSettings(environment="test")
        assert await contact_cards_left(config, [subject]) == {subject}

        await _age_sign_up(subject, days=31)  # what 31 days would do: links expired
        lapsed = await bus.event("signup.lapsed.", child.id, timeout=60)
        request_id = lapsed["data"]["request_id"]
        await wait_for_stage(client, child.id, request_id, ("complete",), timeout=240)

        for database, sql in (
            ("accounts", "SELECT count(*) FROM users WHERE id = $1"),
            ("accounts", "SELECT count(*) FROM action_tokens WHERE user_id = $1"),
            ("notifier", "SELECT count(*) FROM contacts WHERE user_id = $1"),
            ("notifier", "SELECT count(*) FROM deliveries WHERE user_id = $1"),
        ):
            assert await _rows(settings, database, sql, subject) == 0, sql
        assert await contact_cards_left(DeletionSettings(environment="test"), [subject]) == set()
        assert await vault.is_shredded(subject)
        verdict = await client.post(
            f"{API}/operator/requests/{request_id}/verify", headers=officer()
        )
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["clean"] is True, verdict.json()
        kept_by = {f["place"]: f["kept_by_rule"] for f in verdict.json()["findings"]}
        # accounts' record of the lapse stays (ids only): found, and found kept.
        assert kept_by.get("accounts.deletion_requests.user_id") == "disclosure_log", kept_by
        assert all(kept_by.values()), kept_by
        # The notifier answers only after its final email would have gone: none did.
        assert len(await mailbox.to(child.email)) == len(before)
    finally:
        await mailbox.close()
    # The sign-up within its period is untouched, and can still be completed.
    assert await _rows(
        settings, "accounts", "SELECT count(*) FROM users WHERE id = $1", uuid.UUID(waiting.id)
    ) == 1  # fmt: skip
    assert not await vault.is_shredded(waiting.id)
    assert (await verify(client, bus, waiting))["active"] is True


async def _age_sign_up(subject: uuid.UUID, *, days: int) -> None:
    """Move a sign-up and its links back in time (the only write a test makes to a
    service's database: the clock is what it stands for)."""
    dsn = DeletionSettings(environment="test").admin_dsn("accounts")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE users SET created_at = now() - make_interval(days => $2) WHERE id = $1",
                subject,
                days,
            )
            await conn.execute(
                "UPDATE action_tokens SET expires_at = now() - interval '1 hour'"
                " WHERE user_id = $1",
                subject,
            )
    finally:
        await conn.close()


# Where an erased subject's id may stay (never with anything they gave): the operator
# audit log and the disclosure log with its forwards and consents while their periods run, the
# deletion requests (accounts' and the deletion service's record, a legal hold), and
# the notifier's record of the erasure it did.
ID_KEPT_BY_RULE = {
    "accounts.audit_log", "accounts.consents", "accounts.deletion_requests",
    "accounts.disclosures",
    "accounts.recipient_erasures", "deletion.deletion_requests", "deletion.legal_holds",
    "notifier.erasures",
}  # fmt: skip


async def _readable_anywhere(settings: PlatformSettings, values: list[str]) -> dict[str, int]:
    """Where any of ``values`` is still readable in clear, and how often: every table of
    every service database, every record of every topic (the contacts topic's cards are
    sealed: in clear, they show nowhere), every platform log.

    Left out: the vault (keys only), and the SMTP sink's log (the mail provider's side,
    where the emails sent to the user went)."""
    found: dict[str, int] = {}
    patterns = [f"%{v}%" for v in values]
    for database in ("accounts", "notifier", "analytics", "deletion"):
        for schema, table in await _fetch(
            database,
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        ):
            sql = f'SELECT count(*) FROM "{schema}"."{table}" t WHERE t::text LIKE ANY($1)'
            if rows := int((await _fetch(database, sql, patterns))[0][0]):
                found[f"{database}.{table}"] = rows

    topics = [t.name for t in all_topics()]
    for record in await read_topics_from_beginning(settings, topics):
        if any(v.encode() in record for v in values):
            found["kafka"] = found.get("kafka", 0) + 1
    logs = sorted(Layout.from_env().logs.glob("*.log"))
    assert len(logs) > 5, logs  # the platform's logs are where they are looked for
    for log in logs:
        if log.name != "smtp.log":
            text = log.read_text(errors="replace")
            if count := sum(text.count(v) for v in values):
                found[log.name] = count
    return found


async def _assert_no_vault_in(snapshot: backups.Manifest) -> None:
    """The snapshot holds a dump of each service database and nothing of the vault: by
    its manifest (as written), its files, and what each dump says it is a dump of."""
    assert VAULT_DATABASE not in snapshot.databases
    assert set(snapshot.databases) == set(SERVICE_DATABASES), snapshot.databases
    assert backups.Manifest.read(snapshot.folder).databases == snapshot.databases
    files = sorted(p.name for p in snapshot.folder.iterdir())
    assert files == sorted(["manifest.json", *(f"{d}.dump" for d in snapshot.databases)])
    for database in snapshot.databases:
        listing = await _dump_contents(snapshot.folder / f"{database}.dump")
        assert re.findall(r"^;\s*dbname: (\S+)$", listing, re.M) == [database], listing[:500]
        assert "subject_keys" not in listing, database  # the vault's table


async def _dump_contents(dump: Path) -> str:
    """``pg_restore --list``: the dump's header (which database) and its table of contents."""
    process = await asyncio.create_subprocess_exec(
        backups.pg_tool("pg_restore"), "--list", str(dump),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.promise("P-16")
async def test_a_backup_taken_before_deletion_and_restored_after_yields_nothing_readable(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    config = DeletionSettings(environment="test")
    user = await active_user(client, bus)
    await _device(client, user)
    subject = uuid.UUID(user.id)
    snapshot = await backups.take(config, retention=timedelta(minutes=10))
    prefix = f"p16_{uuid.uuid4().hex[:10]}"
    try:
        # The vault is in no backup: its keys, once shredded, are what keeps the
        # subject unreadable in every copy below.
        await _assert_no_vault_in(snapshot)
        request_id = await _request_deletion(client, user)
        pending = await wait_for_stage(
            client, user.id, request_id, ("backups_pending",), timeout=180
        )
        assert await vault.is_shredded(subject)
        by_stage = {s["stage"]: s for s in pending["stages"]}
        assert by_stage["backups_pending"]["expected_by"] == snapshot.expires_at.isoformat()

        # A restore replays the deletion ledger before anything reads it...
        targets = await backups.restore(
            config, snapshot, target_prefix=prefix, databases=["accounts", "notifier"]
        )
        for database, sql in (
            ("accounts", "SELECT count(*) FROM users WHERE id = $1"),
            ("accounts", "SELECT count(*) FROM devices WHERE user_id = $1"),
            ("notifier", "SELECT count(*) FROM contacts WHERE user_id = $1"),
            ("notifier", "SELECT count(*) FROM deliveries WHERE user_id = $1"),
        ):
            conn = await asyncpg.connect(config.admin_dsn(targets[database]))
            try:
                assert await conn.fetchval(sql, subject) == 0, (database, sql)
            finally:
                await conn.close()
        # ...and even a raw copy of the snapshot, with no replay, is unreadable for them.
        raw = f"{prefix}_raw"
        await backups.drop_databases(config, [raw])
        await backups.restore_dump(config, snapshot.folder / "accounts.dump", raw)
        conn = await asyncpg.connect(config.admin_dsn(raw))
        try:
            row = await conn.fetchrow("SELECT email, name FROM users WHERE id = $1", subject)
            model = await conn.fetchval("SELECT model FROM devices WHERE user_id = $1", subject)
        finally:
            await conn.close()
        assert row is not None  # the copy predates the deletion
        assert model is not None
        assert user.email.encode() not in row["email"]
        assert user.name.encode() not in row["name"]
        for sealed, purpose in ((row["email"], "accounts.users.email"),
                                (row["name"], "accounts.users.name"),
                                (model, "accounts.devices.model")):  # fmt: skip
            with pytest.raises(SubjectShredded):
                await vault.open(subject, sealed, purpose=purpose)
        # The notifier's copy of the contact card, in the same snapshot, likewise.
        await backups.drop_databases(config, [f"{raw}_notifier"])
        await backups.restore_dump(config, snapshot.folder / "notifier.dump", f"{raw}_notifier")
        conn = await asyncpg.connect(config.admin_dsn(f"{raw}_notifier"))
        try:
            card = await conn.fetchrow("SELECT * FROM contacts WHERE user_id = $1", subject)
        finally:
            await conn.close()
        assert card is not None  # it was there when the snapshot was taken
        sealed_columns = [k for k, v in card.items() if isinstance(v, bytes) and k != "email_index"]
        assert sealed_columns
        for column in sealed_columns:
            assert user.email.encode() not in card[column], column
            with pytest.raises(SubjectShredded):
                await vault.open(subject, card[column], purpose=f"notifier.contacts.{column}")

        # The request completes only once that snapshot is gone.
        assert await wait_for_stage(client, user.id, request_id, ("backups_pending",))
        await _expire_now(config, snapshot.snapshot_id)
        await wait_for_stage(client, user.id, request_id, ("complete",), timeout=180)
    finally:
        await backups.drop_databases(
            config,
            [f"{prefix}_accounts", f"{prefix}_notifier", f"{prefix}_raw", f"{prefix}_raw_notifier"],
        )
        await _expire_now(config, snapshot.snapshot_id)


@pytest.mark.promise("P-12")
@pytest.mark.promise("P-16")
async def test_a_deleted_device_and_request_stay_deleted_after_a_restore(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    """Made with Idempotency-Keys, and answered with one: each key's answer names its
    item for a day, so it goes with the item, live and in the restored copy."""
    config = DeletionSettings(environment="test")
    user = await active_user(client, bus)
    device = await _device(client, user, key=str(uuid.uuid4()))
    kept = await _device(client, user, key=str(uuid.uuid4()))
    made = await client.post(
        f"{ACCOUNTS}/me/requests",
        json={"category": "feedback", "text": "the courier was late"},
        headers={**user.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert made.status_code == 201, made.text
    request = str(made.json()["id"])
    followed_up = await client.post(
        f"{ACCOUNTS}/me/requests/{request}/messages",
        json={"text": "and it rained"},
        headers={**user.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert followed_up.status_code == 201, followed_up.text
    support = await new_operator(client, await admin(client), "support")
    replied = await client.post(
        f"{ACCOUNTS}/operator/requests/{request}/replies",
        json={"text": "Sorry about that."},
        headers={**support.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert replied.status_code == 201, replied.text
    naming = "SELECT count(*) FROM idempotency_keys WHERE answer::text LIKE '%' || $1 || '%'"
    assert await _rows(settings, "accounts", naming, device) == 1
    assert await _rows(settings, "accounts", naming, request) == 2  # made, and replied to
    snapshot = await backups.take(config, retention=timedelta(minutes=10))
    prefix = f"p12_{uuid.uuid4().hex[:10]}"
    try:
        for path in (f"/me/devices/{device}", f"/me/requests/{request}"):
            deleted = await client.delete(f"{ACCOUNTS}{path}", headers=user.headers)
            assert deleted.status_code == 204, deleted.text
        # Gone from the user's view at once...
        devices = await client.get(f"{ACCOUNTS}/me/devices", headers=user.headers)
        assert [d["id"] for d in devices.json()] == [kept]
        assert (await client.get(f"{ACCOUNTS}/me/requests", headers=user.headers)).json() == []
        # ...and recorded as deletions of those items, erased in every store at once.
        items = await _item_requests(client, user, {device, request})
        for request_id in items.values():
            await wait_for_stage(client, user.id, request_id, ("backups_pending",), timeout=120)
        for item in (device, request):
            assert await _rows(settings, "accounts", naming, item) == 0, item
        mine = "SELECT count(*) FROM idempotency_keys WHERE principal = $1"
        assert await _rows(settings, "accounts", mine, uuid.UUID(user.id)) == 1  # kept's

        targets = await backups.restore(
            config, snapshot, target_prefix=prefix, databases=["accounts"]
        )
        conn = await asyncpg.connect(config.admin_dsn(targets["accounts"]))
        try:
            restored_devices = await conn.fetch(
                "SELECT id::text FROM devices WHERE user_id = $1", uuid.UUID(user.id)
            )
            restored_requests = await conn.fetchval(
                "SELECT count(*) FROM requests WHERE user_id = $1", uuid.UUID(user.id)
            )
            restored_user = await conn.fetchval(
                "SELECT count(*) FROM users WHERE id = $1", uuid.UUID(user.id)
            )
            restored_keys = {item: await conn.fetchval(naming, item) for item in (device, request)}
        finally:
            await conn.close()
        # The restore replayed the two item deletions, and only them.
        assert [r["id"] for r in restored_devices] == [kept]
        assert restored_requests == 0
        assert restored_user == 1
        assert restored_keys == {device: 0, request: 0}
        assert not await vault.is_shredded(user.id)  # an item's deletion shreds no key

        await _expire_now(config, snapshot.snapshot_id)
        for request_id in items.values():
            await wait_for_stage(client, user.id, request_id, ("complete",), timeout=180)
            certificate = await client.get(
                f"{API}/me/requests/{request_id}/certificate", headers=user.headers
            )
            assert certificate.status_code == 200, certificate.text
            assert {"accounts", "notifier", "analytics"} <= set(
                certificate.json()["certificate"]["stores"]
            )
            verdict = await client.post(
                f"{API}/operator/requests/{request_id}/verify", headers=officer()
            )
            assert verdict.status_code == 200, verdict.text
            assert verdict.json()["clean"] is True, verdict.json()
            assert verdict.json()["findings"] == []  # the item's id is nowhere
    finally:
        await backups.drop_databases(config, [f"{prefix}_accounts"])
        await _expire_now(config, snapshot.snapshot_id)


@pytest.mark.promise("P-13")
async def test_a_device_deleted_under_a_legal_hold_is_kept_out_of_sight_until_its_release(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings
) -> None:
    """The hold holds the subject: an item the user deletes meanwhile leaves their view
    at once, but its rows are erased (in accounts too) only once the hold is released."""
    user = await active_user(client, bus)
    free = await active_user(client, bus)  # no hold: the same deletion, done at once
    device = await _device(client, user)
    free_device = await _device(client, free)
    account_request = await _request_deletion(client, user)
    await wait_for_stage(client, user.id, account_request, ("requested", "grace"), timeout=60)
    held = await client.post(
        f"{API}/operator/requests/{account_request}/hold",
        json={"reason": "litigation hold"},
        headers=officer(),
    )
    assert held.status_code == 200, held.text

    deleted = await client.delete(f"{ACCOUNTS}/me/devices/{device}", headers=user.headers)
    assert deleted.status_code == 204, deleted.text
    free_deleted = await client.delete(f"{ACCOUNTS}/me/devices/{free_device}", headers=free.headers)
    assert free_deleted.status_code == 204, free_deleted.text
    assert (await client.get(f"{ACCOUNTS}/me/devices", headers=user.headers)).json() == []
    [item_request] = (await _item_requests(client, user, {device})).values()
    await wait_for_stage(client, user.id, item_request, ("paused",), timeout=60)
    kept = "SELECT count(*) FROM erasing_items WHERE item_id = $1"
    # The device deleted at the same time without a hold is erased from accounts: had
    # the hold been ignored, the held one would have gone by then too.
    for _ in range(600):
        if not await _rows(settings, "accounts", kept, uuid.UUID(free_device)):
            break
        await asyncio.sleep(0.2)
    assert await _rows(settings, "accounts", kept, uuid.UUID(free_device)) == 0
    assert await _rows(settings, "accounts", kept, uuid.UUID(device)) == 1
    # The item's verifier finds the set-aside rows while they wait (the control of the
    # "findings == []" of erased items, tests above).
    waiting = await client.post(f"{API}/operator/requests/{item_request}/verify", headers=officer())
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["clean"] is False, waiting.json()
    assert {"place": "accounts.erasing_items.item_id", "rows": 1, "kept_by_rule": None} in (
        waiting.json()["findings"]
    ), waiting.json()
    # Still held, so still in the user's export, with what they gave in it (P-11).
    exported = (await client.get(f"{ACCOUNTS}/me/export", headers=user.headers)).json()
    assert [
        (i["scope"], i["id"], i["model"], i["damage_state"])
        for i in exported["deleted_awaiting_erasure"]
    ] == [("device", device, "Phone 12", "cracked_screen")]
    assert exported["devices"] == []

    cancelled = await client.post(
        f"{ACCOUNTS}/me/deletion-requests/{account_request}/cancel", headers=user.headers
    )
    assert cancelled.status_code == 200, cancelled.text  # the account itself stays
    released = await client.delete(
        f"{API}/operator/requests/{account_request}/hold", headers=officer()
    )
    assert released.status_code == 200, released.text
    await wait_for_stage(
        client, user.id, item_request, ("backups_pending", "complete"), timeout=120
    )
    assert await _rows(settings, "accounts", kept, uuid.UUID(device)) == 0


async def _item_requests(
    client: httpx.AsyncClient, user: User, item_ids: set[str], timeout: float = 30.0
) -> dict[str, str]:
    """item id -> deletion request id, once the deletion service recorded every item."""
    deadline = time.monotonic() + timeout
    while True:
        listed = await client.get(f"{API}/me/requests", headers=user.headers)
        assert listed.status_code == 200, listed.text
        found = {r["item_id"]: r["request_id"] for r in listed.json()["requests"]}
        if item_ids <= set(found):
            return {i: found[i] for i in item_ids}
        if time.monotonic() > deadline:
            raise AssertionError(f"items {item_ids} not recorded: {listed.json()}")
        await asyncio.sleep(0.25)


async def _expire_now(config: DeletionSettings, snapshot_id: str) -> None:
    conn = await asyncpg.connect(config.database_dsn("deletion"))
    try:
        await conn.execute(
            "UPDATE backup_snapshots SET expires_at = now() WHERE snapshot_id = $1", snapshot_id
        )
    finally:
        await conn.close()
    await backups.expire(config)


@pytest.mark.promise("P-13")
@pytest.mark.timeout(600)  # an erasure, a retention period and a release, on a slow run
async def test_a_deleted_users_invoices_stay_anonymised_for_their_period_then_go(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    user, bystander = await active_user(client, bus), await active_user(client, bus)
    support = await new_operator(client, await admin(client), "support")
    invoice = await record_invoice(
        client, support, user.id, description=f"Screen repair for {user.name}, {user.email}"
    )
    kept_elsewhere = await record_invoice(client, support, bystander.id)
    invoice_id, subject = uuid.UUID(invoice["id"]), uuid.UUID(user.id)

    request_id = await _request_deletion(client, user)
    erased = await wait_for_stage(
        client, user.id, request_id, ("shredded", "backups_pending", "complete"), timeout=240
    )
    erased_at = datetime.fromisoformat(
        next(s["done_at"] for s in erased["stages"] if s["stage"] == "shredded")
    )
    # Kept: the invoice row, anonymised (read at once: the retention period is short here,
    # and runs from the erasure, not from the request's completion).
    (row,) = await _fetch("accounts", "SELECT * FROM invoices WHERE id = $1", invoice_id)
    assert datetime.now(UTC) < erased_at + timedelta(seconds=FINANCIAL_RETENTION_SECONDS), (
        "the erasure took longer than the test retention period: raise"
        " IMT_E2E_FINANCIAL_RETENTION_SECONDS"
    )
    await wait_for_stage(client, user.id, request_id, ("complete",), timeout=240)
    certificate = await client.get(
        f"{API}/me/requests/{request_id}/certificate", headers=token_headers(user.id)
    )
    body = certificate.json()["certificate"]
    if not body["retention_version"].endswith(TEST_RULES_SUFFIX):
        pytest.fail(
            "the deletion worker runs without the test retention rules (started outside this"
            " session?): stop it and run again"
        )
    assert body["stores"]["accounts"]["retained_anonymised"]["invoices"] == 1
    verdict = await client.post(f"{API}/operator/requests/{request_id}/verify", headers=officer())
    assert verdict.json()["clean"] is True, verdict.json()
    assert not [f for f in verdict.json()["findings"] if "invoices" in f["place"]]
    kept_by = {f["place"]: f["kept_by_rule"] for f in verdict.json()["findings"]}
    assert kept_by.get("accounts.deletion_requests.user_id") == "disclosure_log", kept_by
    assert all(kept_by.values()), kept_by

    # No user id, no personal text; the books' facts.
    assert row["user_id"] is None
    assert row["description"] is None
    assert row["retention_key"] not in (None, subject)
    for personal in (user.id, user.email, user.name):
        assert personal not in str(dict(row))
    assert (row["number"], str(row["amount"].normalize()), row["currency"]) == (
        invoice["number"], "129.9", "EUR",
    )  # fmt: skip
    assert (str(row["issued_on"]), row["repair_reference"], row["provider_reference"]) == (
        invoice["issued_on"], invoice["repair_reference"], invoice["provider_reference"],
    )  # fmt: skip
    assert await _rows(
        settings, "accounts", "SELECT count(*) FROM retention_keys WHERE retention_key = $1",
        row["retention_key"],
    ) == 1  # fmt: skip
    assert await vault.is_shredded(subject)

    # The period ends: the deletion service's release erases the invoice.
    deadline = time.monotonic() + FINANCIAL_RETENTION_SECONDS + 60
    while await _rows(
        settings, "accounts", "SELECT count(*) FROM invoices WHERE id = $1", invoice_id
    ):
        assert time.monotonic() < deadline, "the kept invoice outlived its retention period"
        await asyncio.sleep(0.5)
    assert datetime.now(UTC) >= erased_at + timedelta(seconds=FINANCIAL_RETENTION_SECONDS)
    assert await _rows(
        settings, "accounts", "SELECT count(*) FROM retention_keys WHERE retention_key = $1",
        row["retention_key"],
    ) == 0  # fmt: skip
    assert await _rows(
        settings, "accounts", "SELECT count(*) FROM invoices WHERE id = $1",
        uuid.UUID(kept_elsewhere["id"]),
    ) == 1  # fmt: skip
    after = await client.post(f"{API}/operator/requests/{request_id}/verify", headers=officer())
    assert after.json()["clean"] is True, after.json()
    # The release went out under the deletion's own trace id, long after the click.
    [trace] = {
        trace_id_of(r.value.get("traceparent")) for r in bus.records
        if r.value is not None and r.value["type"] == "deletion.requested.v1"
        and r.value["data"]["request_id"] == request_id
    }  # fmt: skip
    releases = [
        r.value for r in bus.records
        if r.value is not None and r.value["type"] == "subject.erase.v1"
        and r.value["data"]["subject_id"] == user.id
        and r.value["data"]["request_id"] != request_id
    ]  # fmt: skip
    assert releases
    assert trace is not None
    assert {trace_id_of(e.get("traceparent")) for e in releases} == {trace}

    # The notifier answered the same release as a release, not as a new erasure: its
    # record of the erasure stays (disclosure_log is kept longer), no second one with the
    # subject's id, no second "your data was deleted" email.
    release = uuid.uuid5(RELEASE_NAMESPACE, f"{request_id}:financial_records")
    deadline = time.monotonic() + 60
    while not await _rows(
        settings, "deletion",
        "SELECT count(*) FROM store_receipts WHERE erase_id = $1 AND store = 'notifier'",
        release,
    ):  # fmt: skip
        assert time.monotonic() < deadline, "the notifier did not answer the release"
        await asyncio.sleep(0.5)
    erasures = await _fetch(
        "notifier", "SELECT request_id, state FROM erasures WHERE subject_id = $1", subject
    )
    assert [(str(e["request_id"]), e["state"]) for e in erasures] == [(request_id, "done")]
    assert not await _rows(
        settings, "notifier", "SELECT count(*) FROM notices WHERE notice_id = $1",
        erasure_notice_id(release),
    )  # fmt: skip
