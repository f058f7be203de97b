"""What operators send reaches real users, driven from the operators' API in accounts
(not put on Kafka by the test): a reply to a request (P-05), a security incident for a
list of users (P-17), a service announcement (P-06) and a new privacy policy (P-23).

Each user signed up and verified through the gateway and the real SMTP sink; each
notice is checked in the user's inbox (through the notifier API) and mailbox. Once
every notice has settled (fanned out, each of its email deliveries final), each user's
items and emails are counted again: exactly one of each, so a duplicate or a late
second one shows.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import httpx
import pytest

from tests.e2e.accounts.support import admin, new_operator, publish_policy, unique
from tests.e2e.deletion.support import needs_every_service
from tests.e2e.platform.journeys import API, signed_up_and_verified
from tests.support.mailbox import Mailbox, eventually

INBOX = "/api/notifier/inbox"


async def _inbox(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(INBOX, headers=headers, params={"limit": 200})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _titled(inbox: dict[str, Any], title: str) -> list[dict[str, Any]]:
    return [i for i in inbox["items"] if i["title"] == title]


async def _subjects(mailbox: Mailbox, address: str) -> list[str]:
    return [str(m["Subject"]) for m in await mailbox.to(address)]


async def _progress(
    client: httpx.AsyncClient, headers: dict[str, str], notice_id: str
) -> dict[str, Any]:
    response = await client.get(f"/api/notifier/ops/notices/{notice_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _settled(progress: dict[str, Any]) -> bool:
    """Fanned out, every email delivery planned, and each of them final (sent or dead):
    a second item or email of the notice, or a late one, would be there by then."""
    if progress["status"] != "fanned_out" or not progress["email_planned"]:
        return False
    states: dict[str, int] = progress["email"]
    final = sum(n for k, n in states.items() if k.startswith(("done", "dead")))
    return final == sum(states.values())


@pytest.mark.promise("P-05")
@pytest.mark.promise("P-06")
@pytest.mark.promise("P-17")
@pytest.mark.promise("P-23")
async def test_operators_notices_reach_users_in_site_and_by_email(platform: str) -> None:
    needs_every_service()
    mailbox = Mailbox()
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            users = {}
            for who in ("affected", "bystander"):
                address = f"{who}-{uuid.uuid4().hex[:12]}@example.org"
                headers = await signed_up_and_verified(
                    client, mailbox, who.title(), address, f"pw-{uuid.uuid4().hex}"
                )
                me = (await client.get(f"{API}/me", headers=headers)).json()
                users[who] = (address, headers, me["id"])
            root = await admin(client)
            support = await new_operator(client, root, "support")
            (a_mail, a_headers, a_id), (b_mail, b_headers, _) = (
                users["affected"],
                users["bystander"],
            )

            # What each user was told: (headers, address, title, subject, notice id).
            told: list[tuple[dict[str, str], str, str, str, str]] = []

            async def arrives(
                headers: dict[str, str], title: str, address: str, subject: str
            ) -> dict[str, Any]:
                """One inbox item titled so, and one email so subjected, at last."""
                inbox = await eventually(
                    lambda: _inbox(client, headers), lambda i: bool(_titled(i, title))
                )
                await eventually(lambda: _subjects(mailbox, address), lambda s: subject in s)
                assert len(_titled(inbox, title)) == 1, inbox
                assert (await _subjects(mailbox, address)).count(subject) == 1
                [item] = _titled(inbox, title)
                told.append((headers, address, title, subject, item["notice_id"]))
                return {"item": item, "inbox": inbox}

            # P-05: a reply to the user's request.
            asked = await client.post(
                f"{API}/me/requests",
                json={"category": "repair", "text": "When is my phone ready?"},
                headers=a_headers,
            )
            assert asked.status_code == 201, asked.text
            replied = await client.post(
                f"{API}/operator/requests/{asked.json()['id']}/replies",
                json={"text": "Tomorrow at noon."},
                headers=support.headers,
            )
            assert replied.status_code == 201, replied.text
            reply = "You have a reply to your request"
            await arrives(a_headers, reply, a_mail, reply)

            # P-17: an incident for a list of users: pinned for them, nothing for others.
            title = unique("Suspicious sign-ins")
            declared = await client.post(
                f"{API}/operator/incidents",
                json={"title": title, "message": "Change your password.",
                      "audience": "listed", "user_ids": [a_id]},
                headers=root.headers,
            )  # fmt: skip
            assert declared.status_code in (200, 201, 202), declared.text
            notice = f"Security notice: {title}"
            seen = await arrives(a_headers, notice, a_mail, notice)
            assert seen["item"]["pinned"] is True
            assert notice in [p["title"] for p in seen["inbox"]["pinned"]]

            # P-06 and P-23: an announcement and a new policy reach every user.
            subject = unique("Shops open on Sundays")
            announced = await client.post(
                f"{API}/operator/announcements",
                json={"title": subject, "message": "From next week, 10 to 16."},
                headers=root.headers,
            )
            assert announced.status_code in (200, 201, 202), announced.text
            version = await publish_policy(client, root, "Shorter retention of visit logs.")
            policy = f"Our privacy policy changes: version {version}"
            for address, headers, _ in users.values():
                await arrives(headers, subject, address, subject)
                changed = await arrives(headers, policy, address, policy)
                assert changed["item"]["pinned"] is True

            # Every notice settled: each user still has exactly one item and one email
            # of each notice they were told (the first arrival counted one, but a
            # duplicate could have come after it).
            settled: dict[str, dict[str, Any]] = {}
            for notice_id in {n for *_, n in told}:
                settled[notice_id] = await eventually(
                    partial(_progress, client, support.headers, notice_id), _settled
                )
            for headers, address, title, subject, notice_id in told:
                inbox = await _inbox(client, headers)
                assert [i["notice_id"] for i in _titled(inbox, title)] == [notice_id], inbox
                assert (await _subjects(mailbox, address)).count(subject) == 1, subject
            # The reply and the incident went to the affected user alone, once.
            for title in (reply, notice):
                [notice_id] = {n for _, _, t, _, n in told if t == title}
                progress = settled[notice_id]
                assert (progress["recipients"], progress["inbox"]["items"]) == (1, 1), progress
                assert progress["email"] == {"done/sent": 1}, progress
            # A user is counted notified of the version once, with the policy notice's
            # one inbox item (every active account of the platform, these two among them).
            [policy_notice] = {n for _, _, t, _, n in told if t == policy}
            reach = await client.get(
                f"/api/notifier/ops/policy-versions/{version}", headers=support.headers
            )
            assert reach.status_code == 200
            progress = settled[policy_notice]
            assert reach.json()["notified"] == progress["recipients"], (reach.json(), progress)
            assert progress["inbox"]["items"] == progress["recipients"], progress
            assert reach.json()["notified"] >= len(users)

            # The bystander was never told of the incident, in either channel.
            assert not _titled(await _inbox(client, b_headers), notice)
            assert notice not in await _subjects(mailbox, b_mail)
    finally:
        await mailbox.close()
