"""P-11 across services: what the notifier holds about a user is in their export too.

Accounts' export holds what the user gave accounts; the notifier holds its copy of the
contact card, the user's email choices, the emails planned for them and their in-site
notices. A user signs up, verifies from the real mailbox, asks (by email, through an operator)
to get no email at all, and gets a reply to a request; the notifier's export shows each
of these.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.accounts.support import admin, new_operator
from tests.e2e.notifier.support import operator_token
from tests.e2e.platform.journeys import API, needs_accounts_and_notifier, signed_up_and_verified
from tests.support.mailbox import Mailbox, eventually

EXPORT = "/api/notifier/me/export"


def _settled(export: dict[str, Any]) -> bool:
    sent = any(
        (e["template"], e["status"], e["outcome"]) == ("verify_email", "done", "sent")
        for e in export["emails"]
    )
    return sent and export["contact"]["active"] and bool(export["inbox"])


@pytest.mark.promise("P-11")
async def test_the_notifier_exports_what_it_holds_about_me(platform: str) -> None:
    needs_accounts_and_notifier()
    address = f"export-{uuid.uuid4().hex[:12]}@example.org"
    name = f"Export {uuid.uuid4().hex[:6]}"
    mailbox = Mailbox()
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            headers = await signed_up_and_verified(
                client, mailbox, name, address, f"pw-{uuid.uuid4().hex}"
            )
            uid = (await client.get(f"{API}/me", headers=headers)).json()["id"]
            suppressed = await client.post(
                "/api/notifier/ops/suppressions",
                json={"user_id": uid, "request_reference": "ZD-1001"},
                headers=operator_token("support"),
            )
            assert suppressed.status_code == 200, suppressed.text
            # An operator's reply to a request of theirs: an in-site notice (no email now).
            asked = await client.post(
                f"{API}/me/requests", json={"category": "repair", "text": "Screen"},
                headers=headers,
            )  # fmt: skip
            assert asked.status_code == 201, asked.text
            support = await new_operator(client, await admin(client), "support")
            replied = await client.post(
                f"{API}/operator/requests/{asked.json()['id']}/replies",
                json={"text": "We will repair it"}, headers=support.headers,
            )  # fmt: skip
            assert replied.status_code == 201, replied.text
            # The sink holds the email a moment before the sender records it as sent; the
            # activated card and the reply reach the notifier over the bus.
            mine = await eventually(
                lambda: client.get(EXPORT, headers=headers),
                lambda r: r.status_code != 200 or _settled(r.json()),
            )
            someone_else = await client.get(EXPORT, headers=operator_token("support"))
            anonymous = await client.get(EXPORT)
    finally:
        await mailbox.close()
    assert mine.status_code == 200, mine.text
    assert (someone_else.status_code, anonymous.status_code) == (403, 401)
    data = mine.json()
    contact = data["contact"]
    assert (contact["email"], contact["name"]) == (address, name)
    # The notifier's copy follows the cards accounts publishes (active once verified).
    assert contact["active"] is True
    assert [(c["category"], c["source"]) for c in data["email_choices"]] == [("all", "operator")]
    verification = [e for e in data["emails"] if e["template"] == "verify_email"]
    assert [(e["status"], e["outcome"]) for e in verification] == [("done", "sent")]
    assert [i["template"] for i in data["inbox"]] == ["request_reply"]
    assert set(data["inbox"][0]) >= {"notice_id", "template", "created_at"}
    assert data["replaced_addresses"] == []  # kept only while an email change is told
