"""P-21: the pages the platform serves load nothing from anyone else."""

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser

from shared.bus import reliable_producer
from shared.config import PlatformSettings
from shared.events import decode_envelope
from shared.events.topics import ANALYTICS_VISITS
from tests.e2e.analytics.support import topic_records
from tests.e2e.notifier.support import emailed_announcement, unsubscribe_https
from tests.support.mailbox import Mailbox, eventually

WEB = Path(__file__).resolve().parents[2] / "web"
# Each counts its view with web/assets/visit.js.
COUNTED_PAGES = ["/", "/privacy.html"]
# What the links in our emails open: no view counted there. A child may open one (their
# own address's confirmation) before anyone knows their age, and under 13 is Do Not
# Track (P-26). Each with its one script, and what shows that script ran when the page
# is opened with a made-up token: an action page shows its form, the erasure's status
# page the API's refusal.
MAILED_LINK_PAGES = {
    "/verify-email": ("links.js", "#link-form"),
    "/guardian-consent": ("links.js", "#link-form"),
    "/reset-password": ("links.js", "#link-form"),
    "/cancel-deletion": ("links.js", "#link-form"),
    "/deletion-status": ("deletion-status.js", "#status-result.refused"),
}
PAGES = COUNTED_PAGES + list(MAILED_LINK_PAGES)
BEACON = "/api/analytics/beacon"
WEBMAIL_MESSAGE = "https://mail.example.org/u/0/inbox/18c2f3a9d4e5"
PERSON = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


@pytest.mark.promise("P-21")
@pytest.mark.parametrize("path", PAGES)
async def test_a_page_makes_no_request_outside_the_platforms_origin(
    browser: Browser, platform: str, path: str
) -> None:
    await _stays_on_our_origin(browser, platform, path, beacon=path in COUNTED_PAGES)


@pytest.mark.promise("P-21")
async def test_the_unsubscribe_page_makes_no_request_outside_the_platforms_origin(
    browser: Browser, platform: str
) -> None:
    # The page a recipient opens from an email's link: a real one, from a real email.
    producer = reliable_producer(PlatformSettings())
    await producer.start()
    mailbox = Mailbox()
    try:
        message = await emailed_announcement(producer, mailbox, marketing_email=True)
    finally:
        await mailbox.close()
        await producer.stop()
    link = urlsplit(unsubscribe_https(message))
    await _stays_on_our_origin(browser, platform, link.path, expect="Unsubscribe", styled=True)


def test_every_page_of_the_site_is_checked() -> None:
    """A new page fails here until it is put in one list or the other: counted, or
    opened from a mailed link (and so never counted)."""

    def path(page: Path) -> str:  # the gateway serves x.html at /x.html and at /x
        if page.name == "index.html":
            return "/"
        return f"/{page.name}" if f"/{page.name}" in PAGES else f"/{page.stem}"

    assert {path(page) for page in WEB.glob("*.html")} == set(PAGES)


@pytest.mark.promise("P-26")
@pytest.mark.parametrize("path", list(MAILED_LINK_PAGES))
async def test_a_page_a_mailed_link_opens_sends_no_visit_beacon(
    browser: Browser, platform: str, path: str
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    # The control: in the same browser, the home page's beacon is seen.
    await page.goto(f"{platform}/", wait_until="networkidle")
    for _ in range(50):
        if _beacons(requested):
            break
        await page.wait_for_timeout(100)
    counted = _beacons(requested)
    requested.clear()
    # The page as the email's link opens it, its token in the fragment.
    await page.goto(f"{platform}{path}#token={'A' * 43}", wait_until="networkidle")
    await page.wait_for_timeout(1500)  # longer than the control's beacon took to leave
    script, ran = MAILED_LINK_PAGES[path]
    scripts = await page.evaluate("[...document.scripts].map(script => script.src)")
    shown = await page.locator(ran).is_visible()
    await context.close()

    assert counted == [f"{platform}{BEACON}"], "the control: the home page counts its view"
    assert scripts == [f"{platform}/assets/{script}"], scripts  # visit.js is not loaded
    assert shown  # the page's own script ran (with the token: a form, or the API's answer)
    assert _beacons(requested) == [], requested
    assert not [url for url in requested if urlsplit(url).path == "/assets/visit.js"], requested


async def _stays_on_our_origin(
    browser: Browser,
    platform: str,
    path: str,
    expect: str | None = None,
    beacon: bool = False,
    styled: bool = False,
) -> None:
    """The page at ``path`` asks only our origin; with ``beacon``, its visit beacon among
    what it asks, so the check covers a request the page's own script makes; with
    ``styled``, the site's stylesheet applies (every policy it is served under allows it)."""
    origin = urlsplit(platform).netloc
    context = await browser.new_context()
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = await page.goto(f"{platform}{path}", wait_until="networkidle")
    await page.wait_for_timeout(300)  # what a page asks after load comes too
    for _ in range(50):  # the visit beacon, on a slow run
        if not beacon or _beacons(requested):
            break
        await page.wait_for_timeout(100)
    cookies = await context.cookies()
    body = await response.text() if response is not None else ""
    policies = await response.header_values("content-security-policy") if response else []
    width = await page.evaluate("getComputedStyle(document.body).maxWidth")
    await context.close()

    assert response is not None
    assert response.status == 200
    assert_only_our_origin_allowed(policies)
    if beacon:
        # The page load alone would make ``requested`` non-empty: the beacon shows that the
        # page's script ran and that what it sends stays here too.
        assert _beacons(requested) == [f"{platform}{BEACON}"], requested
    assert {urlsplit(url).netloc for url in requested} == {origin}
    assert cookies == []
    if expect is not None:
        assert expect in body
    if styled:
        assert width == "736px", width  # site.css: max-width 46rem


# The sources a policy may name (the gateway's policy, deploy/local/gateway.py, names no
# other): this origin, nothing, and inline data images, which load nothing. No host, no
# scheme (https:), no wildcard. A page an API serves may add a policy of its own (a
# second header, which the browser enforces too): it names no other source either.
OWN_SOURCES = {"'self'", "'none'", "data:"}


def csp_policies(headers: list[str]) -> list[dict[str, set[str]]]:
    """Each policy of the Content-Security-Policy headers: directive -> its sources."""
    policies = []
    for header in headers:
        for policy in re.split(r"[,\n]", header):  # one value may carry several policies
            directives: dict[str, set[str]] = {}
            for directive in policy.split(";"):
                if directive.strip():
                    name, *sources = directive.split()
                    directives.setdefault(name.lower(), set(sources))  # the first counts
            if directives:
                policies.append(directives)
    return policies


def assert_only_our_origin_allowed(headers: list[str]) -> None:
    """A policy limits every fetch to this origin by default, and no directive of any
    policy names a source but 'self', 'none' or data:."""
    policies = csp_policies(headers)
    assert any(p.get("default-src") == {"'self'"} for p in policies), headers
    for policy in policies:
        for name, sources in policy.items():
            assert sources <= OWN_SOURCES, (name, sorted(sources - OWN_SOURCES), headers)


def _beacons(requested: list[str]) -> list[str]:
    return [url for url in requested if urlsplit(url).path == BEACON]


@pytest.mark.promise("P-21")
@pytest.mark.parametrize("path", PAGES)
async def test_a_third_party_resource_slipped_into_a_page_is_blocked(
    browser: Browser, platform: str, path: str
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    finished: list[str] = []
    failed: dict[str, str | None] = {}
    page.on("requestfinished", lambda request: finished.append(request.url))
    page.on("requestfailed", lambda request: failed.update({request.url: request.failure}))
    await page.goto(f"{platform}{path}", wait_until="networkidle")
    violations = await page.evaluate(
        """() => new Promise(resolve => {
            const seen = [];
            document.addEventListener("securitypolicyviolation", e => {
                if (!e.blockedURI.includes("example.com")) return;  // ours only
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


@pytest.mark.promise("P-03")
@pytest.mark.promise("P-22")
async def test_a_page_served_under_a_host_name_has_its_view_taken_by_the_collector(
    browser: Browser, platform: str
) -> None:
    # A site is a host name (the collector refuses an IP, and a port is no part of it):
    # the page is opened as users open it, by name, with no cookie and no token.
    named = platform.replace(urlsplit(platform).hostname or "", "localhost", 1)
    # A person's browser: headless Chromium says "HeadlessChrome", which the bot filter
    # rightly drops (403).
    context = await browser.new_context(user_agent=PERSON)
    page = await context.new_page()
    # Opened from a link in a webmail, whose address names the mailbox and the message.
    async with page.expect_response(lambda r: urlsplit(r.url).path == BEACON) as answer:
        await page.goto(f"{named}/", wait_until="networkidle", referer=WEBMAIL_MESSAGE)
    response = await answer.value
    came_from = await page.evaluate("document.referrer")
    await context.close()
    assert response.request.method == "POST"
    assert response.status == 204, await response.text()  # taken; a refusal answers 400
    # 204 also answers a visit dropped for a privacy signal: this one was recorded, once.
    sent = json.loads(response.request.post_data or "{}")
    # The page knew the whole address; the beacon tells only where it was.
    assert came_from == WEBMAIL_MESSAGE
    assert sent["referrer"] == "https://mail.example.org"
    recorded = await eventually(lambda: _visits_of(sent["beacon_id"]), bool, timeout=30)
    assert [(r["site"], r["page"]) for r in recorded] == [("localhost", "/")]


async def _visits_of(beacon_id: str) -> list[dict[str, Any]]:
    """The visits recorded on analytics.visits for one beacon of the site localhost."""
    records = await topic_records(PlatformSettings(), ANALYTICS_VISITS.name, "localhost")
    visits = (decode_envelope(value).data for _, value in records)
    return [v for v in visits if v["beacon_id"] == beacon_id]
