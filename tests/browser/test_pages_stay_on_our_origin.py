"""P-21: the pages the platform serves load nothing from anyone else."""

import uuid
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser

from shared.bus import reliable_producer
from shared.config import PlatformSettings
from shared.events.catalogue.notifier import SendNotice
from tests.e2e.notifier.support import publish, publish_contact, unsubscribe_https
from tests.support.mailbox import Mailbox

PAGES = ["/", "/privacy.html"]


@pytest.mark.promise("P-21")
@pytest.mark.parametrize("path", PAGES)
async def test_a_page_makes_no_request_outside_the_platforms_origin(
    browser: Browser, platform: str, path: str
) -> None:
    await _stays_on_our_origin(browser, platform, path)


@pytest.mark.promise("P-21")
async def test_the_unsubscribe_page_makes_no_request_outside_the_platforms_origin(
    browser: Browser, platform: str
) -> None:
    # The page a recipient opens from an email's link: a real one, from a real email.
    producer = reliable_producer(PlatformSettings())
    await producer.start()
    mailbox = Mailbox()
    try:
        uid, address = await publish_contact(producer, marketing_email=True)
        notice = SendNotice(
            notice_id=uuid.uuid4(), template="service_announcement",
            category="service_announcement", audience="listed", user_ids=(uid,),
            params={"subject": "Opening hours", "message": "From 9 on Monday."},
        )  # fmt: skip
        await publish(producer, notice, subject=str(notice.notice_id))
        [message] = await mailbox.wait_for([address], 1)
    finally:
        await mailbox.close()
        await producer.stop()
    link = urlsplit(unsubscribe_https(message))
    await _stays_on_our_origin(browser, platform, link.path, expect="Unsubscribe")


async def _stays_on_our_origin(
    browser: Browser, platform: str, path: str, expect: str | None = None
) -> None:
    origin = urlsplit(platform).netloc
    context = await browser.new_context()
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = await page.goto(f"{platform}{path}", wait_until="networkidle")
    await page.wait_for_timeout(300)  # the visit beacon is sent after load
    cookies = await context.cookies()
    body = await response.text() if response is not None else ""
    await context.close()

    assert response is not None
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert requested, "the page made no request at all: the check would prove nothing"
    assert {urlsplit(url).netloc for url in requested} == {origin}
    assert cookies == []
    if expect is not None:
        assert expect in body


@pytest.mark.promise("P-21")
async def test_a_third_party_resource_slipped_into_a_page_is_blocked(
    browser: Browser, platform: str
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    finished: list[str] = []
    failed: dict[str, str | None] = {}
    page.on("requestfinished", lambda request: finished.append(request.url))
    page.on("requestfailed", lambda request: failed.update({request.url: request.failure}))
    await page.goto(f"{platform}/", wait_until="networkidle")
    violations = await page.evaluate(
        """() => new Promise(resolve => {
            const seen = [];
            document.addEventListener("securitypolicyviolation", e => {
                seen.push(e.blockedURI + " " + e.effectiveDirective);
                if (seen.length >= 2) resolve(seen);  // both reported: done at once
            });
            const img = document.createElement("img");
            img.src = "https://ads.example.com/pixel.gif";
            const script = document.createElement("script");
            script.src = "https://cdn.example.com/tracker.js";
            document.body.append(img, script);
            setTimeout(() => resolve(seen), 10000);  // what came, if not both
        })"""
    )
    await context.close()

    assert any("ads.example.com" in v and "img-src" in v for v in violations)
    assert any("cdn.example.com" in v and "script-src" in v for v in violations)
    assert not [url for url in finished if "example.com" in url]
    blocked = {url: why for url, why in failed.items() if "example.com" in url}
    assert len(blocked) == 2
    assert set(blocked.values()) == {"csp"}, blocked  # refused by the Content-Security-Policy


async def test_the_home_page_links_to_the_privacy_policy(browser: Browser, platform: str) -> None:
    """CalOPPA: a conspicuous link whose text includes the word Privacy."""
    page = await browser.new_page()
    await page.goto(f"{platform}/")
    link = page.get_by_role("link", name="Privacy policy", exact=True)
    await link.click()
    await page.wait_for_load_state()
    heading = await page.locator("h1").inner_text()
    text = await page.locator("main").inner_text()
    await page.close()
    assert heading == "Privacy policy"
    assert "Do Not Track" in text
