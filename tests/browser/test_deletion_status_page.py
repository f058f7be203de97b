"""The page the final erasure email links to (P-16), in a real browser against the real
deletion API: it shows the request's stages from the secret in its fragment, which
leaves the address bar at once, and says so plainly when the link is wrong.

The email and its link come from the real erasure in tests/e2e/deletion; here the page
is given the link of a request in any stage (a deletion announced as accounts does, its
link minted as the deletion service mints it), so that it runs whatever grace period
the deletion worker has."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, Route

from services.deletion import status_links
from services.deletion.config import DeletionSettings
from shared.config import PlatformSettings
from tests.e2e.deletion.support import announce_deletion, status
from tests.e2e.platform.journeys import needs_accounts_and_notifier


@pytest.fixture
async def client(platform: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform, timeout=60) as c:
        yield c


async def _linked_request(client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """A link's secret, and the request it shows as its user would see it signed in."""
    subject = uuid.uuid4()
    request_id = await announce_deletion(PlatformSettings(environment="test"), subject)
    for _ in range(240):
        shown = await status(client, subject, request_id)
        if shown is not None:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"the deletion service never recorded {request_id}")
    conn = await asyncpg.connect(DeletionSettings(environment="test").database_dsn("deletion"))
    try:
        key = await status_links.key_for(conn, request_id)
    finally:
        await conn.close()
    return key, shown


async def _open(browser: Browser, platform: str, key: str) -> Page:
    page = await (await browser.new_context()).new_page()
    response = await page.goto(f"{platform}/deletion-status#token={key}", wait_until="load")
    assert response is not None
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    return page


@pytest.mark.promise("P-16")
async def test_the_status_link_shows_the_stages_without_a_sign_in(
    browser: Browser, platform: str, client: httpx.AsyncClient
) -> None:
    needs_accounts_and_notifier()
    key, shown = await _linked_request(client)
    page = await _open(browser, platform, key)
    await page.locator("#status").wait_for(state="visible", timeout=15_000)

    assert "#" not in page.url  # the secret left the address bar (and the session's history)
    assert await page.inner_text("#status-reference") == shown["request_id"]
    rows = page.locator("#status-stages tr")
    assert await rows.count() == len(shown["stages"])
    # Said in the live region, so a screen reader announces the answer.
    now = await page.inner_text("#status-result[role=status]")
    assert now.startswith("Now: ")
    assert shown["stage"] not in ("complete",)  # the control: no certificate to show yet
    assert await page.locator("#certificate").is_hidden()
    # Every stage still to come is dated, as the signed-in status page dates it.
    expected = [s for s in shown["stages"] if s["done_at"] is None and s["expected_by"]]
    assert expected
    dated = await rows.evaluate_all("rows => rows.map(r => r.cells[2].textContent)")
    assert sum(1 for d in dated if d) == len(expected), dated


async def test_a_wrong_status_link_says_so(
    browser: Browser, platform: str, client: httpx.AsyncClient
) -> None:
    needs_accounts_and_notifier()
    page = await _open(browser, platform, secrets.token_urlsafe(32))
    result = page.locator("#status-result.refused")
    await result.wait_for(timeout=15_000)
    assert "invalid" in await result.inner_text()
    assert await page.locator("#status").is_hidden()
    assert "#" not in page.url


async def test_a_failed_look_up_can_be_tried_again_and_a_reload_says_why_it_cannot(
    browser: Browser, platform: str, client: httpx.AsyncClient
) -> None:
    """On a flaky network the page keeps the secret for another try; once reloaded, it
    has forgotten it (it left the address bar) and says so, pointing to the email."""
    needs_accounts_and_notifier()
    key, shown = await _linked_request(client)
    page = await (await browser.new_context()).new_page()
    failures: list[bool] = []

    async def unavailable_once(route: Route) -> None:
        if failures:
            await route.continue_()
            return
        failures.append(True)
        await route.fulfill(
            status=503, content_type="application/problem+json",
            body='{"title": "Service unavailable", "status": 503}',
        )  # fmt: skip

    await page.route("**/api/deletion/status-links", unavailable_once)
    await page.goto(f"{platform}/deletion-status#token={key}", wait_until="load")
    retry = page.locator("#status-retry")
    await retry.wait_for(state="visible", timeout=15_000)
    assert "Try again" in await page.inner_text("#status-result.refused")
    await retry.click()
    await page.locator("#status").wait_for(state="visible", timeout=15_000)
    assert await page.inner_text("#status-reference") == shown["request_id"]
    assert await retry.is_hidden()

    await page.reload(wait_until="load")
    said = page.locator("#status-result.refused")
    await said.wait_for(timeout=15_000)
    assert "Open it again from the email" in await said.inner_text()
    assert await page.locator("#status").is_hidden()
