"""Helpers of the notifier's end-to-end tests: publish real events, read real mail."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.local.layout import Layout
from deploy.local.tls import tls_files
from shared.auth import issue_token
from shared.bus.kafka_options import client_options
from shared.config import DEV_TOKEN_PRIVATE_KEY, PlatformSettings
from shared.contact_card import OpenCard
from shared.events import Envelope, Event, decode_envelope, encode_envelope, envelope_for
from shared.events.catalogue.accounts import AgeBand
from shared.events.catalogue.notifier import SendNotice
from tests.support.cards import sealed
from tests.support.mailbox import Mailbox, eventually

# The local stack's CA, in its state folder (IMT_STATE_DIR may move it).
CA_FILE = str(tls_files(Layout.from_env().tls).ca)
T = TypeVar("T")


def new_email() -> str:
    return f"n-{uuid.uuid4().hex[:16]}@example.org"


def user_token(user_id: uuid.UUID) -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY,
        kind="user",
        subject=str(user_id),
        session_id=str(uuid.uuid4()),
        ttl=timedelta(minutes=10),
    )
    return {"Authorization": f"Bearer {token}"}


def operator_token(*roles: Any) -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY,
        kind="operator",
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        ttl=timedelta(minutes=10),
        roles=tuple(roles),
    )
    return {"Authorization": f"Bearer {token}"}


async def publish(
    producer: AIOKafkaProducer, event: Event, *, subject: str, source: str = "accounts"
) -> Envelope:
    envelope = envelope_for(event, source=source, subject=subject)
    await publish_envelope(producer, event.topic.name, envelope)
    return envelope


async def publish_envelope(producer: AIOKafkaProducer, topic: str, envelope: Envelope) -> None:
    await producer.send_and_wait(
        topic, encode_envelope(envelope), key=envelope.key(), headers=envelope.headers()
    )


async def emailed_announcement(
    producer: AIOKafkaProducer, mailbox: Mailbox, **contact: Any
) -> EmailMessage:
    """A service announcement to a new contact (``contact``: publish_contact's options),
    as the mailbox received it."""
    uid, address = await publish_contact(producer, **contact)
    notice = SendNotice(
        notice_id=uuid.uuid4(), template="service_announcement",
        category="service_announcement", audience="listed", user_ids=(uid,),
        params={"subject": "Opening hours", "message": "From 9 on Monday."},
    )  # fmt: skip
    await publish(producer, notice, subject=str(notice.notice_id))
    [message] = await mailbox.wait_for([address], 1)
    return message


async def publish_contact(
    producer: AIOKafkaProducer,
    *,
    address: str | None = None,
    age_band: AgeBand = "adult",
    marketing_email: bool = False,
    tracking_opt_out: bool = False,
    active: bool = True,
    guardian_email: str | None = None,
    user_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, str]:
    uid = user_id or uuid.uuid4()
    address = address or new_email()
    card = await sealed(
        OpenCard(
            user_id=uid,
            email=address,
            name="Test User",
            age_band=age_band,
            marketing_email=marketing_email,
            tracking_opt_out=tracking_opt_out,
            active=active,
            guardian_email=guardian_email,
        )
    )
    await publish(producer, card, subject=str(uid))
    return uid, address


def parts(message: EmailMessage) -> tuple[str, str]:
    """Text and HTML bodies of a received message."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


def unsubscribe_https(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"])
    first = header.split(",")[0].strip()
    assert first.startswith("<https://")
    return first[1:-1]


def unsubscribe_mailto(message: EmailMessage) -> tuple[str, str]:
    """(address, subject) of the List-Unsubscribe mailto, as a mail client reads it."""
    header = str(message["List-Unsubscribe"])
    second = header.split(",")[1].strip()
    assert second.startswith("<mailto:")
    assert second.endswith(">")
    address, _, query = second[len("<mailto:") : -1].partition("?")
    return address, parse_qs(query)["subject"][0]


@asynccontextmanager
async def watch_topic(settings: PlatformSettings, topic: str) -> AsyncIterator[TopicWatch]:
    """Records published on ``topic`` from now on."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        yield TopicWatch(consumer)
    finally:
        await consumer.stop()


class TopicWatch:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.seen: list[Envelope] = []
        self.reasons: dict[uuid.UUID, str] = {}  # envelope id -> dead-letter reason

    async def wait_for(
        self, match: Callable[[Envelope], bool], count: int = 1, timeout: float = 60.0
    ) -> list[Envelope]:
        deadline = time.monotonic() + timeout
        while True:
            batches = await self._consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        envelope = decode_envelope(record.value)
                        self.seen.append(envelope)
                        for key, value in record.headers or ():
                            if key == "dlq_reason":
                                self.reasons[envelope.id] = value.decode()
            found = [e for e in self.seen if match(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)}/{count} matching records in {timeout}s")


async def sse_events(response: httpx.Response) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    """(event name, data) of a text/event-stream response."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def notice_progress(api: httpx.AsyncClient, notice_id: uuid.UUID) -> dict[str, Any]:
    response = await api.get(
        f"/api/notifier/ops/notices/{notice_id}", headers=operator_token("support")
    )
    if response.status_code == 404:
        return {}
    response.raise_for_status()
    progress: dict[str, Any] = response.json()
    return progress


async def wait_notice_settled(
    api: httpx.AsyncClient, notice_id: uuid.UUID, emails: int, timeout: float = 60.0
) -> dict[str, Any]:
    """Until the notice's ``emails`` email deliveries all reached a final state."""

    def settled(progress: dict[str, Any]) -> bool:
        if not progress or progress["status"] != "fanned_out" or not progress["email_planned"]:
            return False
        states = progress["email"]
        final = sum(n for k, n in states.items() if k.startswith(("done", "dead")))
        return bool(final == emails == sum(states.values()))

    return await eventually(lambda: notice_progress(api, notice_id), settled, timeout=timeout)


async def wait_contacts(settings: PlatformSettings, user_ids: Sequence[uuid.UUID]) -> None:
    """Until the notifier's projection holds these contact cards (a test precondition)."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        await eventually(
            lambda: conn.fetchval(
                "SELECT count(*) FROM contacts WHERE user_id = ANY($1::uuid[])", list(user_ids)
            ),
            lambda n: n == len(set(user_ids)),
        )
    finally:
        await conn.close()


async def email_attempts(settings: PlatformSettings, notice_id: uuid.UUID) -> list[int]:
    """The SMTP attempts of each of the notice's email deliveries (ops shows no count)."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        rows = await conn.fetch(
            "SELECT attempts FROM deliveries WHERE notice_id = $1 ORDER BY id", notice_id
        )
    finally:
        await conn.close()
    return [int(r["attempts"]) for r in rows]
