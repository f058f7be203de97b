"""P-05: an operator's reply gives one inbox item and one email, exactly once."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.config import PlatformSettings
from shared.events.catalogue.accounts import (
    CARD_EMAIL,
    CARD_NAME,
    ContactCardChanged,
    ContactCardChangedV1,
    RequestReplied,
)
from shared.events.catalogue.notifier import SendNotice
from tests.e2e.notifier.support import (
    parts,
    publish,
    publish_contact,
    publish_envelope,
    user_token,
    wait_notice_settled,
    watch_topic,
)
from tests.support.cards import card_vault
from tests.support.mailbox import Mailbox


@pytest.mark.promise("P-05")
async def test_a_reply_gives_one_inbox_item_and_one_email_even_when_redelivered(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    uid, address = await publish_contact(producer)
    reply = RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    envelope = await publish(producer, reply, subject=str(uid))
    await publish_envelope(producer, "accounts.requests", envelope)  # redelivered as is
    await publish(producer, reply, subject=str(uid))  # the same reply in a new event

    [message] = await mailbox.wait_for([address], 1)
    assert message["Subject"] == "You have a reply to your request"
    text, html = parts(message)
    assert str(reply.request_id) in text
    assert str(reply.request_id) in html
    # The notifier planned one email for the reply, and it went: a redelivery planned
    # no second one (its deliveries all settled, and there is one).
    settled = await wait_notice_settled(api, reply.reply_id, emails=1)
    assert settled["email"] == {"done/sent": 1}
    # A later reply under the same key is handled after the redeliveries: once its email
    # is here, any duplicate of the first would have been planned (and sent) before it.
    marker = RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    await publish(producer, marker, subject=str(uid))
    await wait_notice_settled(api, marker.reply_id, emails=1)
    messages = await mailbox.wait_for([address], 2)
    assert len(messages) == 2
    assert sum(str(reply.request_id) in parts(m)[0] for m in messages) == 1

    inbox = (await api.get("/api/notifier/inbox", headers=user_token(uid))).json()
    items = {i["notice_id"]: i for i in inbox["items"]}
    assert sorted(items) == sorted([str(reply.reply_id), str(marker.reply_id)])  # once each
    assert len(inbox["items"]) == 2
    assert items[str(reply.reply_id)]["title"] == "You have a reply to your request"
    assert inbox["pinned"] == []


async def test_a_command_before_the_contact_card_waits_for_it(
    producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    uid = uuid.uuid4()
    command = SendNotice(
        notice_id=uuid.uuid4(),
        template="request_reply",
        category="transactional",
        audience="listed",
        user_ids=(uid,),
        params={"request_id": "r-1"},
        channels=("email",),
    )
    envelope = await publish(producer, command, subject=str(uid), source="accounts")
    await asyncio.sleep(2)
    _, address = await publish_contact(producer, user_id=uid)
    await mailbox.wait_for([address], 1)
    await publish_envelope(producer, "notifier.commands", envelope)  # redelivered
    await asyncio.sleep(2)
    assert len(await mailbox.to(address)) == 1


async def test_a_card_from_before_sealing_still_reaches_its_user(
    producer: AIOKafkaProducer, mailbox: Mailbox
) -> None:
    # A version 1 card (in clear) may still be the latest on the compacted topic until
    # accounts reseals every card: the notifier reads it as before.
    uid, address = uuid.uuid4(), f"legacy-{uuid.uuid4().hex[:10]}@example.com"
    card = ContactCardChangedV1(user_id=uid, email=address, name="Legacy", age_band="adult")
    await publish(producer, card, subject=str(uid))
    reply = RequestReplied(user_id=uid, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    await publish(producer, reply, subject=str(uid))
    [message] = await mailbox.wait_for([address], 1)
    assert message["Subject"] == "You have a reply to your request"


async def test_a_card_that_opens_to_a_bad_address_is_dead_lettered_without_it(
    producer: AIOKafkaProducer, settings: PlatformSettings
) -> None:
    uid, bad = uuid.uuid4(), f"no-at-sign-{uuid.uuid4().hex[:10]}"
    async with card_vault() as vault:
        card = ContactCardChanged(
            user_id=uid,
            email=await vault.seal(uid, bad, purpose=CARD_EMAIL),
            name=await vault.seal(uid, "Someone", purpose=CARD_NAME),
            age_band="adult",
        )
    async with watch_topic(settings, "accounts.contacts.dlq") as dlq:
        sent = await publish(producer, card, subject=str(uid))
        [letter] = await dlq.wait_for(lambda e: e.id == sent.id)
    reason = dlq.reasons[letter.id]
    assert "contact card opens invalid" in reason
    assert "email" in reason
    assert bad not in reason  # field names, never the value
