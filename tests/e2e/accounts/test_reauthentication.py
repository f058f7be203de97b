"""What an access token alone cannot do: take over the account's address, or guess its
password by the changes that ask for it again."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.accounts.support import API, BusTail, User, active_user, unique_email


async def _verification_tokens(bus: BusTail, user: User, count: int) -> list[str]:
    notices = await bus.wait_for(
        lambda r: (
            r.key == user.id
            and r.value is not None
            and r.value["data"].get("template") == "verify_email"
        ),
        count=count,
    )
    return [n.value["data"]["params"]["token"] for n in notices if n.value is not None]


async def _email(client: httpx.AsyncClient, user: User) -> tuple[str, bool]:
    me = (await client.get(f"{API}/me", headers=user.headers)).json()
    return me["email"], me["email_verified"]


@pytest.mark.promise("P-08")
async def test_a_new_email_needs_the_current_password(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    theirs = unique_email("taker")
    bare = await client.patch(f"{API}/me", json={"email": theirs}, headers=user.headers)
    assert bare.status_code == 422
    assert bare.json()["type"].endswith("/reauthentication-required")
    wrong = await client.patch(
        f"{API}/me", json={"email": theirs, "current_password": "guess-1234"}, headers=user.headers
    )
    assert wrong.status_code == 403
    assert wrong.json()["type"].endswith("/reauthentication-failed")
    assert await _email(client, user) == (user.email, True)  # nothing changed

    mine = unique_email("moved")
    right = await client.patch(
        f"{API}/me", json={"email": mine, "current_password": user.password}, headers=user.headers
    )
    assert right.status_code == 200, right.text
    assert await _email(client, user) == (mine, False)
    # A name alone needs no password: it does not recover the account.
    named = await client.patch(f"{API}/me", json={"name": "Renamed"}, headers=user.headers)
    assert named.status_code == 200


@pytest.mark.promise("P-08")
async def test_a_verification_link_confirms_only_the_address_it_was_mailed_to(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    first, second = unique_email("first"), unique_email("second")
    for address in (first, second):
        change = {"email": address, "current_password": user.password}
        changed = await client.patch(f"{API}/me", json=change, headers=user.headers)
        assert changed.status_code == 200, changed.text
    _, for_first, for_second = await _verification_tokens(bus, user, 3)

    # The link mailed to the first address cannot verify the second one.
    stale = await client.post(f"{API}/email-verifications", json={"token": for_first})
    assert stale.status_code == 400
    assert stale.json()["type"].endswith("/link-invalid")
    assert await _email(client, user) == (second, False)

    fresh = await client.post(f"{API}/email-verifications", json={"token": for_second})
    assert fresh.status_code == 200, fresh.text
    assert await _email(client, user) == (second, True)


@pytest.mark.promise("P-08")
async def test_password_guesses_through_re_authentication_are_throttled(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    guesses = [
        {"current_password": f"guess-{n:04d}", "new_password": f"new-password-{n:04d}"}
        for n in range(6)
    ]
    statuses = [
        (await client.post(f"{API}/me/password", json=g, headers=user.headers)).status_code
        for g in guesses
    ]
    assert statuses == [403] * 5 + [429]  # as a login's: a few typos free, then back-off
    # The same counter guards every change that asks for the password again.
    deleting = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert deleting.status_code == 429
    assert deleting.json()["type"].endswith("/login-throttled")
    assert int(deleting.headers["retry-after"]) >= 1
    assert (await client.get(f"{API}/me/deletion-requests", headers=user.headers)).json() == []


async def test_testing_addresses_through_email_changes_is_throttled(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Refusing an address in use says someone has it: three such refusals a day go
    free, then an account must wait, whichever address it tries next."""
    user = await active_user(client, bus)
    others = [await active_user(client, bus) for _ in range(4)]
    tries = [
        await client.patch(
            f"{API}/me",
            json={"email": other.email, "current_password": user.password},
            headers=user.headers,
        )
        for other in others
    ]
    assert [t.status_code for t in tries] == [409, 409, 409, 429]
    assert tries[0].json()["type"].endswith("/email-unavailable")
    assert tries[3].json()["type"].endswith("/email-change-throttled")
    assert int(tries[3].headers["retry-after"]) >= 1
    # While it waits, a free address is refused too: the wait is the account's.
    free = await client.patch(
        f"{API}/me",
        json={"email": unique_email("free"), "current_password": user.password},
        headers=user.headers,
    )
    assert free.status_code == 429
    assert await _email(client, user) == (user.email, True)
    # Another account is not slowed down by this one's refusals.
    other = others[0]
    mine = await client.patch(
        f"{API}/me",
        json={"email": unique_email("mine"), "current_password": other.password},
        headers=other.headers,
    )
    assert mine.status_code == 200, mine.text
