"""Delivery guarantees: SMTP outages, erasure, the inbox API and who may use it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from aiokafka import AIOKafkaProducer

from shared.config import PlatformSettings
from shared.events import Envelope
from shared.events.catalogue.accounts import IncidentDeclared, RequestReplied
from shared.events.catalogue.deletion import EraseSubject
from shared.events.catalogue.notifier import SendNotice
from tests.e2e.notifier.support import (
    email_attempts,
    new_email,
    notice_progress,
    operator_token,
    parts,
    publish,
    publish_contact,
    user_token,
    wait_contacts,
    wait_notice_settled,
    watch_topic,
)
from tests.support.mailbox import Mailbox, eventually


async def test_after_an_smtp_outage_every_message_is_delivered_exactly_once(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
) -> None:
    users = [await publish_contact(producer) for _ in range(3)]
    await wait_contacts(settings, [u for u, _ in users])
    command = SendNotice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="listed",
        user_ids=tuple(u for u, _ in users),
        channels=("email",),
        params={"subject": "Shop closed on Friday", "message": "Closed for inventory."},
    )
    await mailbox.set_mode("tempfail")  # global: kept as short as the proof allows
    try:
        await publish(producer, command, subject=str(command.notice_id))
        # Each email tried once and refused: all three wait for a retry...
        first = await eventually(
            lambda: email_attempts(settings, command.notice_id),
            lambda a: len(a) == 3 and min(a) >= 1,
            timeout=30,
        )
        # ...which is made, and refused too: more attempts, still nothing sent.
        await eventually(
            lambda: email_attempts(settings, command.notice_id),
            lambda a: sum(a) > sum(first),
            timeout=30,
        )
        progress = await notice_progress(api, command.notice_id)
        assert set(progress["email"]) <= {"pending", "sending"}
        assert sum(progress["email"].values()) == 3
        # Read while the sink still refuses: once it accepts, a retry may land at once.
        assert await mailbox.to(*(a for _, a in users)) == []
    finally:
        await mailbox.set_mode("accept")
    progress = await wait_notice_settled(api, command.notice_id, emails=3, timeout=90)
    assert progress["email"] == {"done/sent": 3}
    await asyncio.sleep(2)
    for _, address in users:
        assert len(await mailbox.to(address)) == 1


async def _contact_with_a_reply(
    producer: AIOKafkaProducer, mailbox: Mailbox
) -> tuple[uuid.UUID, str, RequestReplied]:
    """A contact whose request got a reply, mailed already."""
    uid, address = await publish_contact(producer)
    reply = RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    await publish(producer, reply, subject=str(uid))
    await mailbox.wait_for([address], 1)
    return uid, address, reply


def _notifier_receipt(command: EraseSubject) -> Callable[[Envelope], bool]:
    """The notifier's answer to ``command`` (other stores answer the same command too)."""

    def mine(envelope: Envelope) -> bool:
        return envelope.data.get("request_id") == str(command.request_id) and (
            envelope.data.get("store") == "notifier"
        )

    return mine


async def test_erasure_sends_the_final_email_first_then_erases_and_answers_once(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
) -> None:
    uid, address, _ = await _contact_with_a_reply(producer, mailbox)
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=uid)
    mine = _notifier_receipt(command)

    async with watch_topic(settings, "deletion.receipts") as receipts:
        await publish(producer, command, subject=str(uid), source="deletion")
        [receipt] = await receipts.wait_for(mine)
        # The receipt is written only after the confirmation went: it is already here.
        subjects = [m["Subject"] for m in await mailbox.to(address)]
        assert subjects == ["You have a reply to your request", "Your data has been deleted"]
        assert receipt.data["store"] == "notifier"
        assert receipt.data["erased"]["contacts"] == 1
        assert receipt.data["erased"]["inbox_items"] == 1
        assert receipt.data["erased"]["deliveries"] == 2

        await publish(producer, command, subject=str(uid), source="deletion")  # again
        receipts_now = await receipts.wait_for(mine, count=2)
    # Erased again (an operator's retry is the same command): this pass found nothing.
    again = receipts_now[1].data["erased"]
    assert again == {table: 0 for table in receipt.data["erased"]}
    inbox = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
    assert inbox == {"pinned": [], "items": [], "next_before": None}
    await asyncio.sleep(1)
    assert len(await mailbox.to(address)) == 2


async def test_erasing_one_request_takes_its_replies_inbox_item_email_record_and_notice(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
) -> None:
    uid, _, reply = await _contact_with_a_reply(producer, mailbox)
    command = EraseSubject(
        request_id=uuid.uuid4(), subject_id=uid, scope="request", item_id=reply.request_id
    )
    mine = _notifier_receipt(command)

    async with watch_topic(settings, "deletion.receipts") as receipts:
        await publish(producer, command, subject=str(uid), source="deletion")
        [receipt] = await receipts.wait_for(mine)
    assert receipt.data["erased"] == {"inbox_items": 1, "deliveries": 1, "notices": 1}
    exported = (await api.get("/api/notifier/me/export", headers=user_token(uid))).json()
    assert [e["template"] for e in exported["emails"]] == []
    inbox = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
    assert inbox["items"] == []


async def test_the_inbox_api_lists_counts_marks_read_and_acknowledges(
    api: httpx.AsyncClient, producer: AIOKafkaProducer
) -> None:
    uid, _ = await publish_contact(producer, active=False)
    other, _ = await publish_contact(producer, active=False)
    reply = RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    incident = IncidentDeclared(
        incident_id=uuid.uuid4(),
        title="Lost backup tape",
        message="No passwords were on it.",
        audience="listed",
        user_ids=(uid,),
    )
    await publish(producer, reply, subject=str(uid))
    await publish(producer, incident, subject=str(incident.incident_id))
    me = user_token(uid)
    counts = await eventually(
        lambda: _json(api.get("/api/notifier/inbox/unread-count", headers=me)),
        lambda c: c.get("unread") == 2,
    )
    assert counts == {"unread": 2, "pinned": 1}
    inbox = (await api.get("/api/notifier/inbox", headers=me)).json()
    [pinned] = inbox["pinned"]
    plain = next(i for i in inbox["items"] if not i["pinned"])
    assert pinned["notice_id"] == str(incident.incident_id)
    assert "No passwords were on it." in pinned["body"]

    assert (
        await api.post(f"/api/notifier/inbox/{plain['id']}/read", headers=user_token(other))
    ).status_code == 404
    assert (await api.post(f"/api/notifier/inbox/{plain['id']}/read")).status_code == 401
    # Ids past what a bigint holds are invalid input (422), not a server error.
    for path in ("inbox/9223372036854775808/read", "inbox/9223372036854775808/acknowledge",
                 "inbox?before=9223372036854775808"):  # fmt: skip
        method = api.get if "?" in path else api.post
        huge = await method(f"/api/notifier/{path}", headers=me)
        assert huge.status_code == 422, (path, huge.text)
    read = await api.post(f"/api/notifier/inbox/{plain['id']}/read", headers=me)
    assert read.json()["read_at"] is not None
    assert (await _json(api.get("/api/notifier/inbox/unread-count", headers=me))) == {
        "unread": 1,
        "pinned": 1,
    }
    # Read is not acknowledged: a pinned notice stays until acknowledged.
    await api.post(f"/api/notifier/inbox/{pinned['id']}/read", headers=me)
    assert len((await api.get("/api/notifier/inbox", headers=me)).json()["pinned"]) == 1
    acked = await api.post(f"/api/notifier/inbox/{pinned['id']}/acknowledge", headers=me)
    assert acked.json()["acknowledged_at"] is not None
    assert (await api.get("/api/notifier/inbox", headers=me)).json()["pinned"] == []
    assert (await _json(api.get("/api/notifier/inbox/unread-count", headers=me))) == {
        "unread": 0,
        "pinned": 0,
    }


async def test_operators_see_progress_users_do_not(api: httpx.AsyncClient) -> None:
    path = f"/api/notifier/ops/notices/{uuid.uuid4()}"
    assert (await api.get(path, headers=user_token(uuid.uuid4()))).status_code == 403
    assert (await api.get(path, headers=operator_token("analyst"))).status_code == 403
    assert (await api.get(path, headers=operator_token("support"))).status_code == 404
    inbox = await api.get("/api/notifier/inbox", headers=operator_token("admin"))
    assert inbox.status_code == 403


async def test_parental_consent_goes_to_the_guardian_only(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    guardian = new_email()
    uid, child = await publish_contact(
        producer, age_band="under_13", guardian_email=guardian, active=False
    )
    command = SendNotice(
        notice_id=uuid.uuid4(),
        template="parental_consent",
        category="transactional",
        audience="listed",
        user_ids=(uid,),
        channels=("email",),
        recipient="guardian",
        params={"token": "t", "link": "https://localhost:8443/consent/t"},
    )
    await publish(producer, command, subject=str(uid))
    [message] = await mailbox.wait_for([guardian], 1)
    assert "https://localhost:8443/consent/t" in parts(message)[0]
    await wait_notice_settled(api, command.notice_id, emails=1)
    assert await mailbox.to(child) == []


async def _json(request: Awaitable[httpx.Response]) -> dict[str, int]:
    body: dict[str, int] = (await request).json()
    return body


async def test_a_scheduled_notice_waits_for_its_time(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    uid, address = await publish_contact(producer, active=False)
    command = SendNotice(
        notice_id=uuid.uuid4(),
        template="request_reply",
        category="transactional",
        audience="listed",
        user_ids=(uid,),
        params={"request_id": "r-later"},
        # Far enough ahead that a slow run still reads the notice before it is due.
        send_at=datetime.now(UTC) + timedelta(seconds=10),
    )
    await publish(producer, command, subject=str(uid))
    scheduled = await eventually(lambda: notice_progress(api, command.notice_id), lambda p: bool(p))
    assert scheduled["status"] == "scheduled"
    assert await mailbox.to(address) == []
    [message] = await mailbox.wait_for([address], 1, timeout=90)
    assert message["Subject"] == "You have a reply to your request"
    inbox = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
    assert [i["notice_id"] for i in inbox["items"]] == [str(command.notice_id)]
