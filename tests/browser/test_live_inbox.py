"""P-17 in a real browser: the server pushes a breach notice live, at once and without a
reload, to a browser's EventSource on the live inbox stream (opened with a single-use
ticket).

What this proves is the server side and the browser's own EventSource: the stream opens
from a page's origin through the gateway, with the ticket, and the notice arrives pushed.
No platform page opens the stream yet: the JavaScript that opens it is the test's own
(``OPEN_STREAM``, evaluated in a loaded page). A page showing the notice is not proven
here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser

from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events.catalogue.accounts import IncidentDeclared
from tests.e2e.notifier.support import publish, publish_contact, user_token

# Injected by the test (no platform page has this code): a ticket, then an EventSource.
OPEN_STREAM = """
async (authorization) => {
  const ticket = await fetch("/api/notifier/inbox/stream-tickets", {
    method: "POST", headers: { Authorization: authorization },
  }).then((r) => r.json());
  window.notices = [];
  window.streamReady = false;
  const source = new EventSource(`/api/notifier/inbox/stream?ticket=${ticket.ticket}`);
  source.addEventListener("ready", () => { window.streamReady = true; });
  source.addEventListener("notice", (e) => window.notices.push(JSON.parse(e.data)));
}
"""


@pytest.fixture
async def producer(settings: PlatformSettings) -> AsyncIterator[AIOKafkaProducer]:
    kafka = reliable_producer(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


@pytest.mark.promise("P-17")
async def test_the_server_pushes_a_breach_notice_live_to_a_browsers_event_source(
    browser: Browser, platform: str, producer: AIOKafkaProducer
) -> None:
    uid, _ = await publish_contact(producer)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{platform}/", wait_until="load")  # the origin the stream is for
        await page.evaluate(OPEN_STREAM, user_token(uid)["Authorization"])
        await page.wait_for_function("() => window.streamReady === true", timeout=15_000)

        incident = IncidentDeclared(
            incident_id=uuid.uuid4(),
            title="Stolen support laptop",
            message="Reset your password.",
            audience="listed",
            user_ids=(uid,),
        )
        await publish(producer, incident, subject=str(incident.incident_id))
        await page.wait_for_function("() => window.notices.length > 0", timeout=30_000)
        notices = await page.evaluate("() => window.notices")
    finally:
        await context.close()
    assert len(notices) == 1
    assert notices[0]["notice_id"] == str(incident.incident_id)
    assert notices[0]["pinned"] is True
    assert notices[0]["title"] == "Security notice: Stolen support laptop"
