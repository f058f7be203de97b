"""The links our emails carry, followed in a real browser from the real emails: each opens
a page of ours that does what the email says once the person confirms, and only then.
Opening a link (or a mail scanner fetching it) changes nothing, and its token leaves the
address bar at once."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, Route

from tests.e2e.notifier.support import parts
from tests.e2e.platform.journeys import API, needs_accounts_and_notifier
from tests.support.clock import a_childs_birth_date
from tests.support.mailbox import Mailbox


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    needs_accounts_and_notifier()
    box = Mailbox()
    yield box
    await box.close()


@pytest.fixture
async def client(platform: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform, timeout=60) as c:
        yield c


async def _link(mailbox: Mailbox, address: str, page: str, count: int) -> str:
    """The link to ``page`` in the ``count``-th email to ``address``, as mailed."""
    [*_, message] = await mailbox.wait_for([address], count)
    text, html = parts(message)
    found = re.search(rf"https?://\S+/{page}#token=[A-Za-z0-9_\-]+", text)
    assert found is not None, text
    assert found.group(0) in html  # the same link in both parts
    return found.group(0)


async def _open(browser: Browser, link: str) -> Page:
    """The link opened as a person does; nothing done yet."""
    page = await (await browser.new_context()).new_page()
    response = await page.goto(link, wait_until="load")
    assert response is not None
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "#" not in page.url  # the token left the address bar (and the session's history)
    return page


async def _confirm(page: Page) -> str:
    await page.click("#link-form button")
    result = page.locator("#link-result.ok, #link-result.refused")
    await result.wait_for(timeout=15_000)
    # A keyboard user is not sent back to the page's start: the answer takes the focus
    # once the button is gone (hidden or disabled), else the button keeps it.
    done = await page.evaluate(
        "(() => { const b = document.querySelector('#link-form button');"
        " return document.getElementById('link-form').hidden || b.disabled; })()"
    )
    focused = await page.evaluate("document.activeElement && document.activeElement.id")
    assert focused == ("link-result" if done else ""), focused
    return await result.inner_text()


async def _lose_the_first_answer(page: Page, api: str) -> None:
    """The page's first request to ``api`` reaches iMT and is carried out, but its answer
    never comes back (a flaky network): the person is left to try again."""
    lost: list[bool] = []

    async def flaky(route: Route) -> None:
        if lost:
            await route.continue_()
            return
        lost.append(True)
        answered = await route.fetch()  # carried out by iMT...
        assert answered.ok, await answered.text()
        await route.abort("connectionreset")  # ...and the answer lost on the way

    await page.route(f"**{api}", flaky)


async def _try_again(page: Page) -> tuple[str, str]:
    """After an answer lost, the person sends the form again: what the page says, and
    how (``result ok`` or ``result refused``)."""
    lost = await _confirm(page)
    assert "could not reach iMT" in lost  # the button stays: worth another try
    await page.click("#link-form button")
    result = page.locator(
        "#link-result.ok:not(:empty), #link-result.refused:not(:has-text('could not reach'))"
    )
    await result.wait_for(timeout=15_000)
    focused = await page.evaluate("document.activeElement && document.activeElement.id")
    assert focused == "link-result"  # the form is gone: the answer takes the focus
    return await result.inner_text(), await result.get_attribute("class") or ""


async def _sign_up(client: httpx.AsyncClient, **extra: str) -> tuple[str, str]:
    address, password = f"link-{uuid.uuid4().hex[:10]}@example.com", f"pw-{uuid.uuid4().hex}"
    body = {"name": "Link Follower", "email": address, "password": password, **extra}
    signed = await client.post(f"{API}/users", json=body)
    assert signed.status_code == 202, signed.text
    return address, password


async def _verified(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> tuple[str, str]:
    """A sign-up whose address was confirmed from its page: (address, password)."""
    address, password = await _sign_up(client)
    verified = await _open(browser, await _link(mailbox, address, "verify-email", 1))
    assert "confirmed" in await _confirm(verified)
    return address, password


async def _log_in(client: httpx.AsyncClient, address: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/sessions", json={"email": address, "password": password})


async def test_the_verification_link_confirms_the_address_once_the_person_confirms(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    address, password = await _sign_up(client)
    page = await _open(browser, await _link(mailbox, address, "verify-email", 1))
    assert (await _log_in(client, address, password)).status_code == 401  # opened: no change
    assert "confirmed" in await _confirm(page)
    assert (await _log_in(client, address, password)).status_code == 200
    # The link is spent: a second page (another tab, the mail opened again) is told it
    # was used, and that the address is confirmed: done, not refused.
    again = await _open(browser, await _link(mailbox, address, "verify-email", 1))
    said = await _confirm(again)
    assert said.startswith("This link was already used:"), said
    assert "confirmed" in said
    assert await again.get_attribute("#link-result", "class") == "result ok"
    assert await again.locator("#link-form").is_hidden()


async def test_a_verification_whose_answer_was_lost_is_told_done_when_sent_again(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    address, password = await _sign_up(client)
    page = await _open(browser, await _link(mailbox, address, "verify-email", 1))
    await _lose_the_first_answer(page, "/api/accounts/email-verifications")
    said, how = await _try_again(page)
    assert said.startswith("This link was already used:"), said
    assert "confirmed" in said
    assert how == "result ok"
    assert (await _log_in(client, address, password)).status_code == 200


@pytest.mark.promise("P-26")
async def test_the_guardian_consent_link_lets_a_child_use_the_account(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    guardian = f"guardian-{uuid.uuid4().hex[:10]}@example.com"
    address, password = await _sign_up(
        client, birth_date=a_childs_birth_date(), guardian_email=guardian
    )
    verified = await _open(browser, await _link(mailbox, address, "verify-email", 1))
    assert "confirmed" in await _confirm(verified)
    assert (await _log_in(client, address, password)).status_code == 401  # no consent yet
    consent = await _open(browser, await _link(mailbox, guardian, "guardian-consent", 1))
    assert "Thank you" in await _confirm(consent)
    assert (await _log_in(client, address, password)).status_code == 200


async def test_the_reset_link_sets_the_password_typed_on_its_page(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    address, password = await _verified(browser, client, mailbox)
    asked = await client.post(f"{API}/password-resets", json={"email": address})
    assert asked.status_code == 202
    page = await _open(browser, await _link(mailbox, address, "reset-password", 2))
    new_password = f"new-{uuid.uuid4().hex}"
    await page.fill("input[name=new_password]", new_password)
    assert "password is changed" in await _confirm(page)
    assert (await _log_in(client, address, password)).status_code == 401
    assert (await _log_in(client, address, new_password)).status_code == 200


async def test_a_reset_whose_answer_was_lost_is_told_done_when_sent_again(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    """The new password was set, the answer lost: sending it again must not tell the
    person the link is invalid (they would think the password unchanged)."""
    address, password = await _verified(browser, client, mailbox)
    asked = await client.post(f"{API}/password-resets", json={"email": address})
    assert asked.status_code == 202
    page = await _open(browser, await _link(mailbox, address, "reset-password", 2))
    await _lose_the_first_answer(page, "/api/accounts/password-resets/complete")
    new_password = f"new-{uuid.uuid4().hex}"
    await page.fill("input[name=new_password]", new_password)
    said, how = await _try_again(page)
    assert said.startswith("This link was already used:"), said
    assert "password was changed" in said
    assert how == "result ok"
    assert (await _log_in(client, address, password)).status_code == 401
    assert (await _log_in(client, address, new_password)).status_code == 200


@pytest.mark.promise("P-15")
async def test_the_link_in_the_deletion_email_cancels_the_deletion(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    address, password = await _verified(browser, client, mailbox)
    login = await _log_in(client, address, password)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    asked = await client.post(
        f"{API}/me/deletion-requests", json={"password": password}, headers=headers
    )
    assert asked.status_code == 202, asked.text
    page = await _open(browser, await _link(mailbox, address, "cancel-deletion", 2))
    assert await _statuses(client, headers) == ["requested"]  # opened: nothing cancelled
    assert "cancelled" in await _confirm(page)
    assert await _statuses(client, headers) == ["cancelled"]


@pytest.mark.promise("P-15")
async def test_a_cancel_whose_answer_was_lost_is_told_done_when_sent_again(
    browser: Browser, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    address, password = await _verified(browser, client, mailbox)
    login = await _log_in(client, address, password)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    asked = await client.post(
        f"{API}/me/deletion-requests", json={"password": password}, headers=headers
    )
    assert asked.status_code == 202, asked.text
    page = await _open(browser, await _link(mailbox, address, "cancel-deletion", 2))
    await _lose_the_first_answer(page, "/api/accounts/deletion-cancellations")
    said, how = await _try_again(page)
    assert said.startswith("This link was already used:"), said
    assert "cancelled" in said
    assert how == "result ok"
    assert await _statuses(client, headers) == ["cancelled"]


async def _statuses(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    listed = await client.get(f"{API}/me/deletion-requests", headers=headers)
    assert listed.status_code == 200, listed.text
    return [r["status"] for r in listed.json()]
