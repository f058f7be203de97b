"""P-21: the pages the platform serves load nothing from anyone else."""

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser

PAGES = ["/", "/privacy.html"]


@pytest.mark.promise("P-21")
@pytest.mark.parametrize("path", PAGES)
async def test_a_page_makes_no_request_outside_the_platforms_origin(
    browser: Browser, platform: str, path: str
) -> None:
    origin = urlsplit(platform).netloc
    context = await browser.new_context()
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = await page.goto(f"{platform}{path}", wait_until="networkidle")
    await page.wait_for_timeout(300)  # the visit beacon is sent after load
    cookies = await context.cookies()
    await context.close()

    assert response is not None
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert requested, "the page made no request at all: the check would prove nothing"
    assert {urlsplit(url).netloc for url in requested} == {origin}
    assert cookies == []


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
