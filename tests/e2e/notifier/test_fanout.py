"""Fan-out: announcements (P-06), policy versions (P-23), breach notices (P-17)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.notifier.handlers import policy_notice_id
from shared.config import PlatformSettings
from shared.events.catalogue.accounts import IncidentDeclared, PolicyVersionPublished
from shared.events.catalogue.notifier import SendNotice
from tests.e2e.notifier.support import (
    notice_progress,
    operator_token,
    publish,
    publish_contact,
    publish_envelope,
    sse_events,
    user_token,
    wait_contacts,
    wait_notice_settled,
)
from tests.support.mailbox import Mailbox, eventually


@pytest.fixture
async def deactivate_after(
    producer: AIOKafkaProducer,
) -> AsyncIterator[list[tuple[uuid.UUID, str]]]:
    """Users created active for a broadcast test are deactivated afterwards, so that
    later broadcasts (of any test run) do not keep mailing them."""
    users: list[tuple[uuid.UUID, str]] = []
    yield users
    for uid, address in users:
        await publish_contact(producer, user_id=uid, address=address, active=False)


async def one_email_each(mailbox: Mailbox, addresses: list[str], subject: str) -> None:
    for address in addresses:
        matching = [m for m in await mailbox.to(address) if m["Subject"] == subject]
        assert len(matching) == 1, address


@pytest.mark.promise("P-06")
async def test_an_announcement_reaches_every_active_user_once(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
    deactivate_after: list[tuple[uuid.UUID, str]],
) -> None:
    for _ in range(5):
        deactivate_after.append(await publish_contact(producer))
    inactive, inactive_address = await publish_contact(producer, active=False)
    await wait_contacts(settings, [u for u, _ in deactivate_after] + [inactive])
    subject = f"New opening hours {uuid.uuid4().hex[:6]}"
    command = SendNotice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="all",
        params={"subject": subject, "message": "We open at 9 from Monday."},
    )
    envelope = await publish(producer, command, subject=str(command.notice_id))
    await publish_envelope(producer, "notifier.commands", envelope)  # redelivered
    await publish(producer, command, subject=str(command.notice_id))  # sent twice

    first = await eventually(
        lambda: notice_progress(api, command.notice_id),
        lambda p: bool(p) and p["status"] == "fanned_out",
    )
    progress = await wait_notice_settled(
        api, command.notice_id, emails=first["recipients"], timeout=120
    )
    assert progress["inbox"]["items"] == progress["recipients"]
    # Nothing failed on the way: operators see no failure and no hold.
    assert progress["failures"] == 0
    assert progress["last_failure"] is None
    assert progress["held_until"] is None
    addresses = [a for _, a in deactivate_after]
    await mailbox.wait_for(addresses, len(addresses))
    await one_email_each(mailbox, addresses, subject)
    for uid, _ in deactivate_after:
        inbox = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
        assert [i["notice_id"] for i in inbox["items"]] == [str(command.notice_id)]
    assert await mailbox.to(inactive_address) == []
    inbox = (await api.get("/api/notifier/inbox", headers=user_token(inactive))).json()
    assert inbox["items"] == []


@pytest.mark.promise("P-23")
async def test_a_new_policy_version_notifies_every_user_once_and_records_it(
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    mailbox: Mailbox,
    settings: PlatformSettings,
    deactivate_after: list[tuple[uuid.UUID, str]],
) -> None:
    for _ in range(4):
        deactivate_after.append(await publish_contact(producer))
    await wait_contacts(settings, [u for u, _ in deactivate_after])
    version = f"2.{uuid.uuid4().hex[:8]}"
    published = PolicyVersionPublished(
        policy_version=version,
        summary="Shorter retention.",
        effective_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    envelope = await publish(producer, published, subject=version)
    await publish_envelope(producer, "policy.versions", envelope)  # redelivered
    notice_id = policy_notice_id(version)

    first = await eventually(
        lambda: notice_progress(api, notice_id), lambda p: bool(p) and p["status"] == "fanned_out"
    )
    settled = await wait_notice_settled(api, notice_id, emails=first["recipients"], timeout=120)
    addresses = [a for _, a in deactivate_after]
    await one_email_each(mailbox, addresses, f"Our privacy policy changes: version {version}")

    for uid, _ in deactivate_after:
        headers = user_token(uid)
        inbox = (await api.get("/api/notifier/inbox", headers=headers)).json()
        [pinned] = inbox["pinned"]
        assert pinned["notice_id"] == str(notice_id)
        shown = (await api.get("/api/notifier/policy-notices", headers=headers)).json()
        assert [
            (s["policy_version"], s["emailed_at"] is not None, s["seen_at"]) for s in shown
        ] == [(version, True, None)]
        acked = await api.post(f"/api/notifier/inbox/{pinned['id']}/acknowledge", headers=headers)
        assert acked.status_code == 200
        shown = (await api.get("/api/notifier/policy-notices", headers=headers)).json()
        assert shown[0]["seen_at"] is not None
        assert (await api.get("/api/notifier/inbox", headers=headers)).json()["pinned"] == []

    record = await api.get(
        f"/api/notifier/ops/policy-versions/{version}", headers=operator_token("privacy_officer")
    )
    # Emailed: every recipient whose email went (others in the run may have opted out
    # of all email: theirs were suppressed, and they count as notified, not emailed).
    sent = settled["email"].get("done/sent", 0)
    assert sent >= 4
    assert record.json() == {
        "policy_version": version,
        "notified": first["recipients"],
        "emailed": sent,
        "seen": 4,
    }


@pytest.mark.promise("P-17")
async def test_a_breach_pins_a_notice_for_every_affected_user_live_and_by_email(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox, platform: str
) -> None:
    # Inactive cards: the breach reaches them (security notices go to everyone listed),
    # while other tests' broadcasts to "all active users" leave them alone.
    users = [await publish_contact(producer, active=False) for _ in range(200)]
    watched = [u for u, _ in users[:3]]
    incident = IncidentDeclared(
        incident_id=uuid.uuid4(),
        title="Unauthorised access to a support laptop",
        message="Reset your password; we ended every session.",
        audience="listed",
        user_ids=tuple(u for u, _ in users),
    )

    ready = {u: asyncio.Event() for u in watched}
    async with (
        httpx.AsyncClient(base_url=platform, timeout=60) as live,
        asyncio.TaskGroup() as group,
    ):
        streams = [group.create_task(_first_live_notice(live, u, ready[u])) for u in watched]
        async with asyncio.timeout(30):
            for event in ready.values():
                await event.wait()
        started = time.monotonic()
        await publish(producer, incident, subject=str(incident.incident_id))
    elapsed = time.monotonic() - started
    for stream in streams:
        notice = stream.result()
        assert notice["notice_id"] == str(incident.incident_id)
        assert notice["pinned"] is True
        assert notice["title"] == "Security notice: Unauthorised access to a support laptop"
    assert elapsed < 30, f"live notice took {elapsed:.1f}s"  # live, not by polling (speed: bench)

    async def pinned(uid: uuid.UUID) -> list[str]:
        body = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
        return [i["notice_id"] for i in body["pinned"]]

    results = await asyncio.gather(*(pinned(u) for u, _ in users))
    assert all(r == [str(incident.incident_id)] for r in results)
    progress = await wait_notice_settled(api, incident.incident_id, emails=200, timeout=120)
    assert progress["inbox"]["items"] == 200
    assert progress["email"] == {"done/sent": 200}
    received = await mailbox.wait_for([a for _, a in users], 200)
    assert len(received) == 200
    assert {str(m["To"]) for m in received} == {a for _, a in users}


async def _first_live_notice(
    client: httpx.AsyncClient, uid: uuid.UUID, ready: asyncio.Event
) -> dict[str, object]:
    """Open the user's live stream; signal ``ready``; return the first notice pushed."""
    async with client.stream("GET", "/api/notifier/inbox/stream", headers=user_token(uid)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(30):
            async for name, data in sse_events(r):
                if name == "ready":
                    ready.set()
                elif name == "notice":
                    return data
    raise AssertionError("stream ended")
