"""P-25 and P-26 with the tokens accounts really issues: a child signed up with a
guardian's consent, and an adult who opts out of tracking, send beacons from an app
(their access token attached); neither visit is counted. The opt-out answers with a new
token that carries it, the one the app sends from then on."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import jwt
import pytest

from shared.config import PlatformSettings
from tests.e2e.analytics.support import (
    BEACON,
    beacon,
    browser,
    marker,
    only_a_sentinel_is_counted,
    unique_site,
)
from tests.e2e.notifier.support import parts
from tests.e2e.platform.journeys import API, needs, signed_up_and_verified, token_from_mail
from tests.support.clock import a_childs_birth_date
from tests.support.mailbox import Mailbox

CONSENT_LINK = re.compile(r"/guardian-consent#token=([A-Za-z0-9_\-]+)")


async def _child_token(client: httpx.AsyncClient, mailbox: Mailbox) -> str:
    """A child's access token, as accounts issues it once the guardian consented."""
    address, guardian = (f"{who}-{uuid.uuid4().hex[:10]}@example.org" for who in "cg")
    password = f"pw-{uuid.uuid4().hex}"
    signed = await client.post(
        f"{API}/users",
        json={"name": "Kid", "email": address, "password": password,
              "birth_date": a_childs_birth_date(), "guardian_email": guardian},
    )  # fmt: skip
    assert signed.status_code == 202, signed.text
    verify = await token_from_mail(mailbox, address, "verify-email", 1)
    assert (await client.post(f"{API}/email-verifications", json={"token": verify})).is_success
    [consent_mail] = await mailbox.wait_for([guardian], 1)
    found = CONSENT_LINK.search(parts(consent_mail)[0])
    assert found is not None
    consent = await client.post(f"{API}/guardian-consents", json={"token": found.group(1)})
    assert consent.status_code == 200, consent.text
    login = await client.post(f"{API}/sessions", json={"email": address, "password": password})
    assert login.status_code == 200, login.text
    token: str = login.json()["access_token"]
    return token


@pytest.mark.promise("P-25")
@pytest.mark.promise("P-26")
async def test_real_tokens_of_a_child_and_of_an_opted_out_adult_are_not_tracked(
    platform: str, settings: PlatformSettings
) -> None:
    needs("accounts", "notifier", "analytics")
    site = unique_site()
    mailbox = Mailbox()
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            child = await _child_token(client, mailbox)
            adult = await signed_up_and_verified(
                client, mailbox, "Adult", f"a-{uuid.uuid4().hex[:10]}@example.org",
                f"pw-{uuid.uuid4().hex}",
            )  # fmt: skip
            # A second on, so that a token renewed for a full lifetime would end later.
            await asyncio.sleep(1.1)
            saved = await client.put(
                f"{API}/me/preferences",
                json={"marketing_email": False, "personalisation": True, "tracking_opt_out": True},
                headers=adult,
            )
            assert saved.status_code == 200, saved.text
            assert saved.json()["tracking_opt_out"] is True
            opted_out = saved.json()["access_token"]
            assert opted_out  # the choice changed: a token that carries it
            # For no longer than the caller's: flipping the choice renews nothing.
            assert _expiry(opted_out) <= _expiry(adult["Authorization"].removeprefix("Bearer "))
            # Each beacon's path has its marker, looked for on every analytics topic
            # and in every analytics table once the sentinel is counted.
            markers = [marker() for _ in range(2)]
            for n, token in enumerate((child, opted_out)):
                sent = await client.post(
                    BEACON, json=beacon(site, f"/app/{markers[n]}"),
                    headers={**browser(n), "Authorization": f"Bearer {token}"},
                )  # fmt: skip
                assert sent.status_code == 204  # the same answer as a counted visit
            # Saving the same choice again changes nothing: no new token.
            again = await client.put(
                f"{API}/me/preferences",
                json={"marketing_email": False, "personalisation": True, "tracking_opt_out": True},
                headers={"Authorization": f"Bearer {opted_out}"},
            )
            assert again.json()["access_token"] is None
            await only_a_sentinel_is_counted(client, settings, site, absent=markers)
    finally:
        await mailbox.close()


def _expiry(token: str) -> int:
    """The token's exp claim (read, not verified: the services verify it)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return int(claims["exp"])
