"""A security incident for ALL users (P-17), as an operator declares it through the
gateway: the path a breach reaching 100,000 accounts takes (one INSERT ... SELECT over the
notifier's contacts), where the other P-17 tests list their users.

Other tests share the stack and leave contacts behind, so the proof compares sets of ids
read at the time, never counts: every contact the notifier holds active before the
incident and still after it has exactly one pinned inbox item for it, and no contact
it never held active has one; two users who signed up and verified through the gateway see
it pinned in their inbox through the API, and by email.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest

from shared.config import PlatformSettings
from tests.e2e.accounts.support import admin, unique
from tests.e2e.notifier.support import notice_progress
from tests.e2e.platform.journeys import API, needs_accounts_and_notifier, signed_up_and_verified
from tests.support.mailbox import Mailbox, eventually

ACTIVE_CONTACTS = "SELECT user_id FROM contacts WHERE active AND NOT erase_pending"


async def _ids(conn: asyncpg.Connection, query: str) -> set[uuid.UUID]:
    return {row[0] for row in await conn.fetch(query)}


@pytest.mark.promise("P-17")
async def test_an_incident_for_all_users_pins_one_notice_for_every_contact_held(
    platform: str, settings: PlatformSettings
) -> None:
    needs_accounts_and_notifier()
    mailbox = Mailbox()
    notifier = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            users: list[tuple[uuid.UUID, str, dict[str, str]]] = []
            for _ in range(2):
                address = f"breach-{uuid.uuid4().hex[:12]}@example.org"
                headers = await signed_up_and_verified(
                    client, mailbox, "Breach Reader", address, f"pw-{uuid.uuid4().hex}"
                )
                me = (await client.get(f"{API}/me", headers=headers)).json()
                users.append((uuid.UUID(me["id"]), address, headers))
            # A precondition, not the proof: their verified cards have reached the notifier.
            mine = {uid for uid, _, _ in users}
            await eventually(lambda: _ids(notifier, ACTIVE_CONTACTS), lambda ids: mine <= ids)
            root = await admin(client)

            contacts_before = await _ids(notifier, ACTIVE_CONTACTS)
            title = unique("Stolen backup tape")
            declared = await client.post(
                f"{API}/operator/incidents",
                json={"title": title, "message": "We ended every session; sign in again.",
                      "audience": "all"},
                headers=root.headers,
            )  # fmt: skip
            assert declared.status_code == 201, declared.text
            assert declared.json()["affected"] >= len(users)
            incident_id = uuid.UUID(declared.json()["id"])
            await eventually(
                lambda: notice_progress(client, incident_id),
                lambda p: bool(p) and p["status"] == "fanned_out",
            )
            contacts_after = await _ids(notifier, ACTIVE_CONTACTS)

            rows = await notifier.fetch(
                "SELECT user_id, count(*) AS items, bool_and(pinned) AS pinned"
                " FROM inbox_items WHERE notice_id = $1 GROUP BY user_id",
                incident_id,
            )
            items = {r["user_id"]: (r["items"], r["pinned"]) for r in rows}
            # Active all along: held when the incident went out, whenever that was.
            held = contacts_before & contacts_after
            assert mine <= held
            missed = held - items.keys()
            assert not missed, f"{len(missed)} of {len(held)} contacts got no item"
            assert {u: items[u] for u in held if items[u] != (1, True)} == {}
            # Nobody the notifier never held active got one.
            assert items.keys() <= contacts_before | contacts_after

            notice = f"Security notice: {title}"
            for _, address, headers in users:
                inbox = await client.get(
                    "/api/notifier/inbox", headers=headers, params={"limit": 200}
                )
                assert inbox.status_code == 200, inbox.text
                body: dict[str, Any] = inbox.json()
                pinned = [p for p in body["pinned"] if p["notice_id"] == str(incident_id)]
                assert [(p["title"], p["pinned"]) for p in pinned] == [(notice, True)]
                mails = await eventually(
                    partial(mailbox.to, address),
                    lambda found: any(str(m["Subject"]) == notice for m in found),
                )
                assert [str(m["Subject"]) for m in mails].count(notice) == 1
    finally:
        await notifier.close()
        await mailbox.close()
