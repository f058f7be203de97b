"""Helpers for the accounts end-to-end tests: users, operators, and a tail of the bus.

Links (email verification, guardian consent) are taken where the notifier takes them:
from the SendNotice commands accounts publishes on notifier.commands.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local.gateway import access_log
from deploy.local.layout import Layout
from services.accounts.config import AccountsSettings
from shared.bus.kafka_options import client_options, log_reader, reliable_producer, seek_to_start
from shared.config import PlatformSettings
from shared.contact_card import OpenCard
from shared.events import Event, encode_envelope, envelope_for
from shared.events.catalogue.accounts import ContactCardChanged
from shared.events.catalogue.deletion import EraseSubject
from shared.events.topics import PRIMARY_TOPICS
from shared.pii import luhn_valid
from tests.support.cards import card_vault, opened

API = "/api/accounts"
CARD_TYPE = ContactCardChanged.type_name()
ALL_PRIMARY: tuple[str, ...] = tuple(topic.name for topic in PRIMARY_TOPICS)
WATCHED = (
    "notifier.commands",
    "accounts.lifecycle",
    "accounts.contacts",
    "accounts.requests",
    "policy.versions",
    "security.incidents",
    "deletion.receipts",
    "accounts.recipient_erasures",
    "deletion.commands",
    "deletion.stages",
)


@dataclass(frozen=True)
class Record:
    topic: str
    key: str | None
    value: dict[str, Any] | None  # None: a tombstone
    raw: bytes | None


@dataclass
class BusTail:
    """Every record published on the watched topics since the test session started."""

    consumer: AIOKafkaConsumer
    records: list[Record] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for part in batch.values():
                for r in part:
                    value = json.loads(r.value) if r.value is not None else None
                    key = r.key.decode() if r.key is not None else None
                    self.records.append(Record(r.topic, key, value, r.value))

    async def wait_for(
        self, match: Callable[[Record], bool], timeout: float = 30.0, count: int = 1
    ) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records if match(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(found)} of {count} records arrived")
            await asyncio.sleep(0.1)

    async def event(
        self, type_prefix: str, key: str, timeout: float = 30.0, **data: Any
    ) -> dict[str, Any]:
        """The first event of a type for a key whose data holds ``data``."""

        def match(r: Record) -> bool:
            return (
                r.key == key
                and r.value is not None
                and r.value["type"].startswith(type_prefix)
                and all(r.value["data"].get(k) == v for k, v in data.items())
            )

        found = await self.wait_for(match, timeout)
        value = found[0].value
        assert value is not None
        return value

    def sealed_cards(self, user_id: str) -> list[dict[str, Any]]:
        """The data of every contact card of a user seen on the bus, sealed, oldest first."""
        return [
            r.value["data"] for r in self.records
            if r.key == user_id and r.value is not None and r.value["type"] == CARD_TYPE
        ]  # fmt: skip

    async def card(self, user_id: str, timeout: float = 30.0, **fields: Any) -> OpenCard:
        """The first contact card of a user whose fields, opened, hold ``fields``."""
        deadline = time.monotonic() + timeout
        tried = 0
        async with card_vault() as vault:
            while True:
                cards = self.sealed_cards(user_id)
                for data in cards[tried:]:
                    card = await opened(data, vault)
                    if all(getattr(card, name) == value for name, value in fields.items()):
                        return card
                tried = len(cards)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no card of {user_id} holds {fields} ({tried} seen)")
                await asyncio.sleep(0.1)

    async def notice(self, user_id: str, template: str) -> dict[str, Any]:
        event = await self.event("notice.send.", user_id, template=template)
        data: dict[str, Any] = event["data"]
        return data


async def start_tail(settings: PlatformSettings) -> BusTail:
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    partitions = [
        TopicPartition(t, p)
        for t in WATCHED
        for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
    ]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolve now: later records are all seen
    tail = BusTail(consumer)
    tail.task = asyncio.create_task(tail._run())
    return tail


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def read_topics_from_beginning(
    settings: PlatformSettings,
    topics: Sequence[str] = ALL_PRIMARY,
) -> list[bytes]:
    """Every record value (and key) now on ``topics``, read from the start of the log."""
    consumer = log_reader(settings)
    await consumer.start()
    try:
        known: dict[str, set[int]] = {}
        for _ in range(50):  # metadata can lag a moment behind; never skip a topic silently
            await consumer._client.force_metadata_update()
            known = {t: consumer.partitions_for_topic(t) or set() for t in topics}
            if all(known.values()):
                break
            await asyncio.sleep(0.2)
        missing = sorted(t for t, found in known.items() if not found)
        assert not missing, f"no partitions known for {missing}"
        partitions = [TopicPartition(t, p) for t in topics for p in known[t]]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await seek_to_start(consumer, partitions)
        values: list[bytes] = []
        pending = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    values.append((r.key or b"") + b"\x00" + (r.value or b""))
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        assert not pending, f"could not read {pending} to the end"
        return values
    finally:
        await consumer.stop()


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unique_email(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.com"


@dataclass
class User:
    id: str
    email: str
    password: str
    name: str
    access: str = ""
    refresh: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


async def sign_up(client: httpx.AsyncClient, *, password: str | None = None, **extra: Any) -> User:
    user = User(
        id="",
        email=extra.pop("email", unique_email()),
        password=password or f"pw-{uuid.uuid4().hex}",
        name=extra.pop("name", f"Name {uuid.uuid4().hex[:8]}"),
    )
    response = await client.post(
        f"{API}/users",
        json={"name": user.name, "email": user.email, "password": user.password, **extra},
    )
    assert response.status_code == 202, response.text
    user.id = response.json()["user_id"]
    return user


async def verify(client: httpx.AsyncClient, bus: BusTail, user: User) -> dict[str, Any]:
    notice = await bus.notice(user.id, "verify_email")
    response = await client.post(
        f"{API}/email-verifications", json={"token": notice["params"]["token"]}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def log_in(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(
        f"{API}/sessions", json={"email": user.email, "password": user.password}
    )
    assert response.status_code == 200, response.text
    user.access = response.json()["access_token"]
    user.refresh = response.json()["refresh_token"]


async def active_user(client: httpx.AsyncClient, bus: BusTail, **extra: Any) -> User:
    user = await sign_up(client, **extra)
    await verify(client, bus, user)
    await log_in(client, user)
    return user


async def consented_child(client: httpx.AsyncClient, bus: BusTail) -> tuple[User, str]:
    """An active under-13 account, its guardian's consent given, signed in; and the
    guardian's address."""
    guardian = unique_email("guardian")
    child = await sign_up(
        client, birth_date=f"{time.gmtime().tm_year - 10}-01-01", guardian_email=guardian
    )
    await verify(client, bus, child)
    consent = await bus.notice(child.id, "parental_consent")
    consented = await client.post(
        f"{API}/guardian-consents", json={"token": consent["params"]["token"]}
    )
    assert consented.status_code == 200, consented.text
    await log_in(client, child)
    return child, guardian


async def submit_request(
    client: httpx.AsyncClient, user: User, text: str, category: str = "repair"
) -> str:
    """The id of a request the user submits (``POST /me/requests``, answered 201)."""
    submitted = await client.post(
        f"{API}/me/requests", json={"category": category, "text": text}, headers=user.headers
    )
    assert submitted.status_code == 201, submitted.text
    request_id: str = submitted.json()["id"]
    return request_id


@dataclass
class Operator:
    id: str
    email: str
    password: str
    roles: tuple[str, ...]
    access: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


async def operator_token(client: httpx.AsyncClient, email: str, password: str) -> str:
    response = await client.post(
        f"{API}/operator/sessions", json={"email": email, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def admin(client: httpx.AsyncClient, *, second: bool = False) -> Operator:
    """A first admin (the second one if ``second``): operators an approval needs come
    from both lines, since no operator approves what one of its line requested."""
    settings = AccountsSettings()
    email = settings.accounts_second_admin_email if second else settings.accounts_admin_email
    secret = settings.accounts_second_admin_password if second else settings.accounts_admin_password
    password = secret.get_secret_value()
    token = await operator_token(client, email, password)
    return Operator("", email, password, ("admin",), token)


async def publish_policy(client: httpx.AsyncClient, by: Operator, summary: str) -> str:
    """A new privacy-policy version, published through the operators' API; its name."""
    version = unique("v")
    published = await client.post(
        f"{API}/operator/policy-versions",
        json={"version": version, "summary": summary},
        headers=by.headers,
    )
    assert published.status_code == 201, published.text
    return version


async def provisional_operator(client: httpx.AsyncClient, by: Operator, *roles: str) -> Operator:
    """An operator identity ``by`` created, logged in with the password ``by`` chose:
    until it sets its own, it may do nothing else (P-15)."""
    email, password = unique_email("op"), f"op-{uuid.uuid4().hex}"
    response = await client.post(
        f"{API}/operator/operators",
        json={"email": email, "password": password, "roles": list(roles)},
        headers=by.headers,
    )
    assert response.status_code == 201, response.text
    operator = Operator(response.json()["id"], email, password, tuple(roles))
    operator.access = await operator_token(client, email, password)
    return operator


async def set_own_password(client: httpx.AsyncClient, operator: Operator) -> None:
    """The operator replaces their password with one of their own; their token is then
    the new session's."""
    own = f"own-{uuid.uuid4().hex}"
    response = await client.post(
        f"{API}/operator/me/password",
        json={"current_password": operator.password, "new_password": own},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    operator.password = own
    operator.access = response.json()["access_token"]


async def new_operator(client: httpx.AsyncClient, by: Operator, *roles: str) -> Operator:
    """An operator identity ``by`` created, who logged in and set their own password (the
    first thing every operator created by another must do), with a token of theirs."""
    operator = await provisional_operator(client, by, *roles)
    await set_own_password(client, operator)
    return operator


async def publish(settings: PlatformSettings, event: Event, *, source: str, subject: str) -> None:
    """Publish one event or command exactly as its producing service would."""
    envelope = envelope_for(event, source=source, subject=subject)
    producer = reliable_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            event.topic.name,
            encode_envelope(envelope),
            key=envelope.key(),
            headers=envelope.headers(),
        )
    finally:
        await producer.stop()


INVOICE = {
    "amount": "129.90",
    "currency": "EUR",
    "issued_on": "2026-11-02",
    "payment_provider": "stripe",
    "description": "Screen replacement, customer asked for a call back",
}


async def record_invoice(
    client: httpx.AsyncClient, operator: Operator, user_id: str, **fields: Any
) -> dict[str, Any]:
    """An operator records a repair invoice for a user (unique number and references)."""
    body = {
        **INVOICE,
        "number": unique("INV"),
        "repair_reference": unique("RPR"),
        "provider_reference": unique("pi"),
        **fields,
    }
    response = await client.post(
        f"{API}/operator/users/{user_id}/invoices", json=body, headers=operator.headers
    )
    assert response.status_code == 201, response.text
    invoice: dict[str, Any] = response.json()
    return invoice


async def erasure_receipt(
    bus: BusTail, user_id: str, request_id: uuid.UUID
) -> list[dict[str, Any]]:
    records = await bus.wait_for(
        lambda r: (
            r.topic == "deletion.receipts"
            and r.key == user_id
            and r.value is not None
            and r.value["data"]["store"] == "accounts"
            and r.value["data"]["request_id"] == str(request_id)
        )
    )
    return [r.value["data"] for r in records if r.value is not None]


async def erase_subject(
    settings: PlatformSettings, bus: BusTail, user_id: str, retain: tuple[str, ...]
) -> dict[str, Any]:
    """Publish an EraseSubject as the deletion service does; accounts' receipt."""
    request_id = uuid.uuid4()
    command = EraseSubject(
        request_id=request_id, subject_id=uuid.UUID(user_id), retain_categories=retain
    )
    await publish(settings, command, source="deletion", subject=user_id)
    return (await erasure_receipt(bus, user_id, request_id))[0]


# -- scanning every store for a secret (P-01, P-09) ----------------------------------------

#: Every service's database, and the vault's (the keys that seal personal fields).
SERVICE_DATABASES = ("accounts", "notifier", "deletion", "analytics", "vault")
#: What a card number may be written with between its digits, in the tests that type one.
CARD_SEPARATORS = r"[\s.\-/]"


def _like(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def tables_holding(
    settings: PlatformSettings,
    needles: Sequence[str],
    *,
    ignoring: str | None = None,
    databases: Sequence[str] = SERVICE_DATABASES,
) -> list[str]:
    """``database.table`` of every table one row of which, written as text (a bytea
    column as ``\\x`` and hex), holds one of ``needles``; with ``ignoring`` (a regular
    expression), once what it matches is removed. PostgreSQL searches: nothing is copied
    out, so every table of every database is read, however large."""
    patterns = [_like(n) for n in needles]
    row = "t::text" if ignoring is None else "regexp_replace(t::text, $2, '', 'g')"
    extra = () if ignoring is None else (ignoring,)
    found: list[str] = []
    for database in databases:
        conn = await asyncpg.connect(settings.database_dsn(database))
        try:
            tables = await conn.fetch(
                "SELECT schemaname, tablename FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                " ORDER BY schemaname, tablename"
            )
            for t in tables:
                held = await conn.fetchval(
                    f'SELECT EXISTS (SELECT 1 FROM "{t["schemaname"]}"."{t["tablename"]}" t'
                    f" WHERE {row} LIKE ANY($1::text[]))",
                    patterns,
                    *extra,
                )
                if held:
                    found.append(f"{database}.{t['tablename']}")
        finally:
            await conn.close()
    return found


def logs_holding(needles: Sequence[bytes]) -> list[str]:
    """The platform's log files (every service's, the gateway's, PostgreSQL's, Kafka's,
    the SMTP server's) holding one of ``needles``."""
    return sorted(
        log.name
        for log in Layout.from_env().logs.glob("*.log")
        if any(needle in log.read_bytes() for needle in needles)
    )


async def gateway_trace_ids(request_ids: Sequence[str], timeout: float = 30.0) -> dict[str, str]:
    """The trace id the gateway gave each request (named by the X-Request-Id the client
    sent), once its access log holds every one of them: the id the services' log lines
    and the events those requests queued carry."""
    log = access_log(Layout.from_env())
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, str] = {}
        for line in log.read_text(errors="replace").splitlines():
            if not any(rid in line for rid in request_ids):
                continue
            entry = json.loads(line)
            if entry.get("request_id") in request_ids:
                found[entry["request_id"]] = entry["trace_id"]
        if len(found) == len(set(request_ids)):
            return found
        if time.monotonic() > deadline:
            missing = sorted(set(request_ids) - found.keys())
            raise TimeoutError(f"the gateway logged no request {missing}")
        await asyncio.sleep(0.2)


def luhn_card(prefix: str = "4") -> str:
    """A fresh 16-digit Luhn-valid card number: random, so no earlier run left it anywhere."""
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(15 - len(prefix)))
    return next(body + d for d in "0123456789" if luhn_valid(body + d))
