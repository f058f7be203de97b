"""An opt-out made in the account takes effect before the next send (P-32): a real user,
signed up and verified through the gateway, turns marketing email off through the
accounts API, and a campaign (a marketing SendNotice, as a campaign tool puts it on
notifier.commands) is suppressed for them: their delivery is done/suppressed and their
mailbox gets nothing, while a control user who kept marketing on gets it.

The choice travels from accounts to the notifier on Kafka (the contact card), the
campaign on another topic, and nothing orders the two: the card reaches the notifier
about 50 ms after the API's answer. Sent once the notifier holds the choice, or at once
(a campaign waits ``notifier_marketing_settle_seconds`` before it is decided, so the
card in flight comes first; 2 s in the test run), the campaign must skip the user.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest

from services.notifier.config import NotifierSettings
from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events.catalogue.notifier import SendNotice
from tests.e2e.accounts.support import unique
from tests.e2e.notifier.support import publish, wait_notice_settled
from tests.e2e.platform.journeys import API, needs_accounts_and_notifier, token_from_mail
from tests.support.mailbox import Mailbox, eventually


async def _adult(
    client: httpx.AsyncClient, mailbox: Mailbox
) -> tuple[uuid.UUID, str, dict[str, str]]:
    """An adult (marketing needs a known age) signed up, verified from the mailbox,
    logged in, with marketing email turned on: id, address, session headers."""
    address = f"optout-{uuid.uuid4().hex[:12]}@example.org"
    password = f"pw-{uuid.uuid4().hex}"
    signed = await client.post(
        f"{API}/users",
        json={"name": "Opt Out", "email": address, "password": password,
              "birth_date": "1990-04-02"},
    )  # fmt: skip
    assert signed.status_code == 202, signed.text
    token = await token_from_mail(mailbox, address, "verify-email", 1)
    verified = await client.post(f"{API}/email-verifications", json={"token": token})
    assert verified.status_code == 200, verified.text
    login = await client.post(f"{API}/sessions", json={"email": address, "password": password})
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    await _marketing(client, headers, on=True)
    me = (await client.get(f"{API}/me", headers=headers)).json()
    return uuid.UUID(me["id"]), address, headers


async def _marketing(client: httpx.AsyncClient, headers: dict[str, str], *, on: bool) -> None:
    """Marketing email on or off through the accounts API, the other choices kept."""
    me = (await client.get(f"{API}/me", headers=headers)).json()
    choices = {**me["preferences"], "marketing_email": on}
    saved = await client.put(f"{API}/me/preferences", json=choices, headers=headers)
    assert saved.status_code == 200, saved.text
    assert saved.json()["marketing_email"] is on


def _campaign(subject: str, *user_ids: uuid.UUID) -> SendNotice:
    return SendNotice(
        notice_id=uuid.uuid4(),
        template="marketing_newsletter",
        category="marketing",
        audience="listed",
        user_ids=user_ids,
        channels=("email",),
        params={"subject": subject, "headline": "Tune-up week",
                "message": "Bring your phone in for a check-up."},
    )  # fmt: skip


async def _subjects(mailbox: Mailbox, address: str) -> list[str]:
    return [str(m["Subject"]) for m in await mailbox.to(address)]


@pytest.mark.promise("P-32")
@pytest.mark.parametrize("sent", ["once the notifier holds the choice", "at once"])
async def test_marketing_turned_off_in_the_account_stops_the_next_campaign(
    platform: str, settings: PlatformSettings, sent: str
) -> None:
    needs_accounts_and_notifier()
    mailbox = Mailbox()
    producer = reliable_producer(settings)
    await producer.start()
    notifier = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            uid, address, headers = await _adult(client, mailbox)
            control, control_address, _ = await _adult(client, mailbox)

            async def marketing_held() -> dict[uuid.UUID, Any]:
                rows = await notifier.fetch(
                    "SELECT user_id, marketing_email FROM contacts"
                    " WHERE user_id = ANY($1::uuid[]) AND active AND age_band = 'adult'",
                    [uid, control],
                )
                return {r["user_id"]: r["marketing_email"] for r in rows}

            # Before: both opted in, as the notifier knows, and a campaign reaches both.
            await eventually(marketing_held, lambda m: m == {uid: True, control: True})
            before = _campaign(unique("Tune-up week"), uid, control)
            await publish(producer, before, subject=str(before.notice_id))
            settled = await wait_notice_settled(client, before.notice_id, emails=2)
            assert settled["email"] == {"done/sent": 2}
            for who in (address, control_address):
                await eventually(
                    partial(_subjects, mailbox, who),
                    lambda s: before.params["subject"] in s,
                )

            # The user turns marketing off in the account; then the next campaign goes.
            await _marketing(client, headers, on=False)
            if sent != "at once":
                await eventually(marketing_held, lambda m: m == {uid: False, control: True})
            after = _campaign(unique("Battery week"), uid, control)
            await publish(producer, after, subject=str(after.notice_id))
            settled = await wait_notice_settled(client, after.notice_id, emails=2)
            rows = await notifier.fetch(
                "SELECT user_id, status, outcome, reason FROM deliveries WHERE notice_id = $1",
                after.notice_id,
            )
            outcomes = {r["user_id"]: (r["status"], r["outcome"], r["reason"]) for r in rows}
            assert outcomes == {
                uid: ("done", "suppressed", "no consent to marketing email"),
                control: ("done", "sent", None),
            }, outcomes
            assert settled["email"] == {"done/sent": 1, "done/suppressed": 1}
            # It waited the settle the worker was configured with (this session's).
            waited = await notifier.fetchval(
                "SELECT extract(epoch FROM send_at - created_at) FROM notices WHERE notice_id = $1",
                after.notice_id,
            )
            settle = NotifierSettings().notifier_marketing_settle_seconds
            assert abs(float(waited) - settle) < 0.5, (
                f"the campaign waited {waited} s, not {settle} s: is the notifier worker"
                " running without this session's settings (started outside it)?"
            )
            subject = after.params["subject"]
            await eventually(lambda: _subjects(mailbox, control_address), lambda s: subject in s)
            assert (await _subjects(mailbox, control_address)).count(subject) == 1
            # The control's mail is in: the user's would have come with it. None did.
            assert subject not in await _subjects(mailbox, address)
            assert (await _subjects(mailbox, address)).count(before.params["subject"]) == 1
    finally:
        await notifier.close()
        await producer.stop()
        await mailbox.close()
