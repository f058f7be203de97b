"""Erase commands are answered by analytics: it holds nothing keyed to a person."""

import asyncio
import uuid
from typing import Any

import httpx

from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events import decode_envelope, encode_envelope, envelope_for
from shared.events.catalogue.deletion import EraseSubject
from shared.events.topics import DELETION_COMMANDS, DELETION_RECEIPTS
from tests.e2e.analytics.support import (
    BEACON,
    beacon,
    browser,
    leaves_no_trace,
    site_pages,
    topic_records,
    unique_site,
    wait_for_visits,
)


async def _receipts(settings: PlatformSettings, request_id: uuid.UUID) -> list[dict[str, Any]]:
    records = await topic_records(settings, DELETION_RECEIPTS.name)
    return [
        decode_envelope(value).data
        for _, value in records
        if str(request_id).encode() in value
        and decode_envelope(value).data.get("store") == "analytics"
    ]


async def test_erase_subject_is_answered_once_with_nothing_held(
    platform: str, settings: PlatformSettings
) -> None:
    subject_id, request_id = uuid.uuid4(), uuid.uuid4()
    site = unique_site()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        # A visit naming the user: analytics must not have keyed anything to the user.
        sent = await client.post(BEACON, json=beacon(site, f"/u/{subject_id}"), headers=browser(1))
        assert sent.status_code == 204, sent.text
        # Counted before the command comes: else "nothing held" would prove nothing.
        assert await wait_for_visits(client, site, 1) == 1
    # Read in the store and on the topics, not only in the receipt below: the page was
    # counted under its scrubbed path, and the id is nowhere.
    assert "/u/:id" in await site_pages(settings, site)
    await leaves_no_trace(settings, site, [str(subject_id), str(subject_id).replace("-", "")])
    command = EraseSubject(request_id=request_id, subject_id=subject_id)
    envelope = envelope_for(command, source="deletion", subject=str(subject_id))
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for _ in range(2):  # redelivered: answered once
            await producer.send_and_wait(
                DELETION_COMMANDS.name,
                encode_envelope(envelope),
                key=envelope.key(),
                headers=envelope.headers(),
            )
    finally:
        await producer.stop()
    receipts: list[dict[str, Any]] = []
    for _ in range(60):
        receipts = await _receipts(settings, request_id)
        if receipts:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)
    receipts = await _receipts(settings, request_id)
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt["subject_id"] == str(subject_id)
    assert receipt["store"] == "analytics"
    assert receipt["erased"]
    assert set(receipt["erased"].values()) == {0}
