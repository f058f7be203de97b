"""What the mailbox journeys share: the accounts API through the gateway, links read
from the mail the real SMTP server received, and a verified sign-up."""

from __future__ import annotations

import os
import re

import httpx
import pytest

from tests.e2e.notifier.support import parts
from tests.support.mailbox import Mailbox

API = "/api/accounts"
TOKEN_IN_LINK = re.compile(r"/(verify-email|reset-password)#token=([A-Za-z0-9_\-]+)")


def running(*services: str) -> bool:
    """Whether the test run starts these services (IMT_TEST_SERVICES may name a subset)."""
    wanted = {s for s in os.environ.get("IMT_TEST_SERVICES", "").split(",") if s}
    return not wanted or set(services) <= wanted


def needs(*services: str) -> None:
    """Skip when IMT_TEST_SERVICES runs a subset of services leaving one of these out."""
    if not running(*services):
        pytest.skip(f"needs the {' and '.join(services)} services (unset IMT_TEST_SERVICES)")


def needs_accounts_and_notifier() -> None:
    needs("accounts", "notifier")


async def token_from_mail(mailbox: Mailbox, address: str, page: str, count: int) -> str:
    messages = await mailbox.wait_for([address], count)
    text, html = parts(messages[count - 1])
    found = TOKEN_IN_LINK.search(text)
    assert found is not None, text
    assert found.group(1) == page
    assert found.group(2) in html  # the same link in both parts
    return found.group(2)


async def signed_up_and_verified(
    client: httpx.AsyncClient, mailbox: Mailbox, name: str, address: str, password: str
) -> dict[str, str]:
    """Sign up, verify the address from the mailbox, log in: the session's headers."""
    signed = await client.post(
        f"{API}/users", json={"name": name, "email": address, "password": password}
    )
    assert signed.status_code == 202, signed.text
    token = await token_from_mail(mailbox, address, "verify-email", 1)
    verified = await client.post(f"{API}/email-verifications", json={"token": token})
    assert verified.status_code == 200
    login = await client.post(f"{API}/sessions", json={"email": address, "password": password})
    assert login.status_code == 200
    return {"Authorization": f"Bearer {login.json()['access_token']}"}
