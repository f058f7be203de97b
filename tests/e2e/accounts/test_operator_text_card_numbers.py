"""P-09 on what operators type, through the gateway: a reply to a user's request, a
service announcement, a security incident and an invoice's description. A Luhn-valid
card number in any of them, written plain, in groups of four with spaces or with dashes,
refuses the whole request (422, a problem body naming the field, never the number), and
nothing holding the number reaches a table of any service's database, a Kafka topic or a
log, nor what the user or an operator reads back decrypted (sealed columns cannot show
a number raw).

The same requests without the number are accepted and read back: the searches below do
see operator text where it goes (in clear in accounts' incidents and on Kafka, sealed in
the thread and the invoice).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shared.config import PlatformSettings
from shared.events.topics import all_topics
from tests.e2e.accounts.support import (
    API,
    CARD_SEPARATORS,
    INVOICE,
    BusTail,
    Operator,
    active_user,
    logs_holding,
    luhn_card,
    new_operator,
    read_topics_from_beginning,
    record_invoice,
    submit_request,
    tables_holding,
    unique,
)
from tests.e2e.platform.journeys import needs
from tests.support.mailbox import eventually

SEPARATORS = re.compile(CARD_SEPARATORS.encode())
# How a customer reads a number out to support: as one run, or in groups of four.
FORMATS: dict[str, Callable[[str], str]] = {
    "plain": lambda n: n,
    "spaces": lambda n: " ".join(n[i : i + 4] for i in range(0, 16, 4)),
    "dashes": lambda n: "-".join(n[i : i + 4] for i in range(0, 16, 4)),
}


def _digits(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return SEPARATORS.sub(b"", raw)


@pytest.mark.promise("P-09")
async def test_card_numbers_operators_type_are_refused_and_stored_nowhere(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, settings: PlatformSettings
) -> None:
    needs("notifier")  # the user's inbox is read back decrypted: part of "stored nowhere"
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    request_id = await submit_request(client, user, "Can I pay for the screen at the counter?")
    incident = {"title": "Suspicious sign-ins", "message": "Change your password.",
                "audience": "listed", "user_ids": [user.id]}  # fmt: skip
    invoice = {**INVOICE, "repair_reference": unique("RPR"), "provider_reference": unique("pi")}
    # (where, who, the body, the field the number is typed in)
    cases: list[tuple[str, Operator, dict[str, Any], str]] = [
        (f"{API}/operator/requests/{request_id}/replies", support, {"text": ""}, "text"),
        (f"{API}/operator/announcements", support, {"title": "Opening hours", "message": ""},
         "message"),
        (f"{API}/operator/announcements", support, {"title": "", "message": "From 9."}, "title"),
        (f"{API}/operator/incidents", root, incident, "message"),
        (f"{API}/operator/incidents", root, incident, "title"),
        (f"{API}/operator/users/{user.id}/invoices", support, invoice, "description"),
    ]  # fmt: skip

    numbers: list[str] = []  # each attempt its own number: a leak names its way in
    typed: list[str] = []
    for url, operator, body, field in cases:
        for style, written in FORMATS.items():
            number = luhn_card()
            numbers.append(number)
            typed.append(written(number))
            text = f"Paid by card {written(number)} at the counter"
            sent = {**body, field: text}
            if "invoices" in url:
                sent["number"] = unique("INV")
            response = await client.post(url, json=sent, headers=operator.headers)
            where = (url.rsplit("/", 1)[-1], field, style)
            assert response.status_code == 422, (where, response.status_code, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["status"] == 422
            assert problem["type"].endswith("/card-number"), (where, problem)
            assert [e["location"] for e in problem["errors"]] == [f"body.{field}"], where
            assert number.encode() not in _digits(response.text), where  # never echoed

    # The same requests, each without the number, are accepted: a unique mark in each.
    mark = unique("mark")
    replied = await client.post(
        f"{API}/operator/requests/{request_id}/replies",
        json={"text": f"Yes, at the counter ({mark})."},
        headers=support.headers,
    )
    assert replied.status_code == 201, replied.text
    drill = {**incident, "title": f"Drill {mark}", "message": f"Nothing to do ({mark})."}
    declared = await client.post(f"{API}/operator/incidents", json=drill, headers=root.headers)
    assert declared.status_code == 201, declared.text
    await record_invoice(client, support, user.id, description=f"Screen swap ({mark})")
    # Their events queued after every refused request's would have been: once they are
    # on Kafka, so is anything the refused ones had queued.
    await bus.event("request.replied.", user.id, request_id=request_id)
    await bus.event("incident.declared.", declared.json()["id"])

    # Read back decrypted: the operator's thread, the user's export, the user's inbox.
    thread = await client.get(
        f"{API}/operator/requests/{request_id}",
        params={"purpose": "checking the reply to this repair request"},
        headers=support.headers,
    )
    assert thread.status_code == 200, thread.text
    assert [(m["author"], m["text"]) for m in thread.json()["messages"]] == [
        ("user", "Can I pay for the screen at the counter?"),
        ("operator", f"Yes, at the counter ({mark})."),
    ]
    export = await client.get(f"{API}/me/export", headers=user.headers)
    assert export.status_code == 200, export.text
    assert export.text.count(mark) >= 2  # the reply and the invoice, opened
    read_back = [thread.text, export.text]
    title = f"Security notice: Drill {mark}"

    async def inbox() -> str:
        found = await client.get("/api/notifier/inbox", headers=user.headers)
        assert found.status_code == 200, found.text
        return found.text

    read_back.append(await eventually(inbox, lambda text: title in text))
    assert "Opening hours" not in read_back[-1]  # no refused announcement went out
    for text in read_back:
        assert not [n for n in numbers if n.encode() in _digits(text)]

    # Every store: the number's digits, whatever was between them, and the hex of how
    # it was typed (a bytea column shows its bytes so).
    # (The searches see operator text, whatever is between its characters.)
    drill_title = _digits(f"Drill {mark}").decode()
    assert "accounts.incidents" in await tables_holding(
        settings, [drill_title], ignoring=CARD_SEPARATORS
    )
    stored = await tables_holding(settings, numbers, ignoring=CARD_SEPARATORS)
    assert not stored, f"a card number is in tables {stored}"
    stored = await tables_holding(settings, [t.encode().hex() for t in typed])
    assert not stored, f"a card number's bytes are in tables {stored}"
    records = await read_topics_from_beginning(settings, [t.name for t in all_topics()])
    flat = [_digits(r) for r in records]
    assert any(drill_title.encode() in r for r in flat)
    on_kafka = [n for n in numbers if any(n.encode() in r for r in flat)]
    assert not on_kafka, "a card number is on a Kafka topic"
    logged = await asyncio.to_thread(logs_holding, [n.encode() for n in numbers + typed])
    assert not logged, f"a card number is in logs {logged}"
