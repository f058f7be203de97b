"""What an access token alone cannot do: take over the account's address, or guess its
password by the changes that ask for it again."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.accounts.support import API, BusTail, User, active_user, unique_email


async def _new_address_tokens(bus: BusTail, user: User, count: int) -> list[str]:
    notices = await bus.wait_for(
        lambda r: (
            r.key == user.id
            and r.value is not None
            and r.value["data"].get("template") == "verify_new_email"
        ),
        count=count,
    )
    return [n.value["data"]["params"]["token"] for n in notices if n.value is not None]


async def _ask_for(client: httpx.AsyncClient, user: User, *addresses: str) -> None:
    """Ask for each address in turn, as the user (password given): each is accepted."""
    for address in addresses:
        change = {"email": address, "current_password": user.password}
        changed = await client.patch(f"{API}/me", json=change, headers=user.headers)
        assert changed.status_code == 200, changed.text


async def _confirm(client: httpx.AsyncClient, token: str, status: int) -> httpx.Response:
    """Open a link; its answer has ``status`` (400s are ``link-invalid``)."""
    used = await client.post(f"{API}/email-verifications", json={"token": token})
    assert used.status_code == status, used.text
    if status == 400:
        assert used.json()["type"].endswith("/link-invalid")
    return used


async def _email(client: httpx.AsyncClient, user: User) -> tuple[str, bool, str | None]:
    """The account's address, whether it is verified, and the address waiting for its link."""
    me = (await client.get(f"{API}/me", headers=user.headers)).json()
    return me["email"], me["email_verified"], me["pending_email"]


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
    assert await _email(client, user) == (user.email, True, None)  # nothing changed

    mine = unique_email("moved")
    right = await client.patch(
        f"{API}/me", json={"email": mine, "current_password": user.password}, headers=user.headers
    )
    assert right.status_code == 200, right.text
    assert await _email(client, user) == (user.email, True, mine)
    # A name alone needs no password: it does not recover the account.
    named = await client.patch(f"{API}/me", json={"name": "Renamed"}, headers=user.headers)
    assert named.status_code == 200


@pytest.mark.promise("P-08")
async def test_a_verification_link_confirms_only_the_address_it_was_mailed_to(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    first, second = unique_email("first"), unique_email("second")
    await _ask_for(client, user, first, second)
    for_first, for_second = await _new_address_tokens(bus, user, 2)

    # The link mailed to the first address cannot confirm the second one.
    await _confirm(client, for_first, 400)
    assert await _email(client, user) == (user.email, True, second)

    await _confirm(client, for_second, 200)
    assert await _email(client, user) == (second, True, None)


@pytest.mark.promise("P-08")
async def test_only_the_link_of_the_latest_change_confirms_an_address(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Changing to B, then to C, then to B again: the first link for B and the link for
    C are revoked, so an address is never confirmed by a link someone else received."""
    user = await active_user(client, bus)
    b, c = unique_email("b"), unique_email("c")
    await _ask_for(client, user, b, c, b)
    first_b, for_c, second_b = await _new_address_tokens(bus, user, 3)
    for revoked in (first_b, for_c):
        await _confirm(client, revoked, 400)
    assert await _email(client, user) == (user.email, True, b)
    await _confirm(client, second_b, 200)
    assert await _email(client, user) == (b, True, None)


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


@pytest.mark.promise("P-08")
async def test_an_address_change_tells_no_one_whether_the_address_has_an_account(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """A change to another account's address is answered as one to a free address; only
    whoever holds that mailbox can learn more, and it never moves to this account."""
    user, owner = await active_user(client, bus), await active_user(client, bus)
    answers = []
    for address in (unique_email("free"), owner.email):
        change = {"email": address, "current_password": user.password}
        answers.append(await client.patch(f"{API}/me", json=change, headers=user.headers))
    free, taken = answers
    assert (taken.status_code, free.status_code) == (200, 200), (taken.text, free.text)
    assert set(taken.json()) == set(free.json())
    asked = {"pending_email": None, "pending_email_until": None}  # the address, its time
    assert {**taken.json(), **asked} == {**free.json(), **asked}
    assert taken.json()["pending_email"] == owner.email
    assert taken.headers.keys() - {"date", "content-length"} == (
        free.headers.keys() - {"date", "content-length"}
    )

    # The link went to the owner's mailbox; confirming it (the mailbox's holder, who may
    # know) is refused and spends the link. The change waits out its time like any
    # unconfirmed one: dropped at once, it would tell this account the address is taken.
    _, for_taken = await _new_address_tokens(bus, user, 2)
    refused = await _confirm(client, for_taken, 409)
    assert refused.json()["type"].endswith("/email-unavailable")
    assert await _email(client, user) == (user.email, True, owner.email)
    await _confirm(client, for_taken, 400)
    assert await _email(client, owner) == (owner.email, True, None)
    login = {"email": owner.email, "password": owner.password}
    assert (await client.post(f"{API}/sessions", json=login)).status_code == 200


@pytest.mark.promise("P-08")
async def test_a_new_password_drops_an_address_change_waiting_for_its_link(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Whoever asked for the change knew the old password: the owner who replaces it
    (locked out, or just wary) must not leave that change confirmable."""
    user = await active_user(client, bus)
    await _ask_for(client, user, unique_email("hijacker"))
    [link] = await _new_address_tokens(bus, user, 1)
    new_password = f"{user.password}-new"
    replaced = await client.post(
        f"{API}/me/password",
        json={"current_password": user.password, "new_password": new_password},
        headers=user.headers,
    )
    assert replaced.status_code == 200, replaced.text
    headers = {"Authorization": f"Bearer {replaced.json()['access_token']}"}
    me = (await client.get(f"{API}/me", headers=headers)).json()
    assert (me["email"], me["pending_email"]) == (user.email, None)
    await bus.card(user.id, email=user.email, pending_email=None, pending_change=None)
    await _confirm(client, link, 400)
    assert (await client.get(f"{API}/me", headers=headers)).json()["email"] == user.email


async def test_two_accounts_confirming_one_address_end_with_one_owner(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    first, second = await active_user(client, bus), await active_user(client, bus)
    shared_address = unique_email("wanted")
    for user in (first, second):
        await _ask_for(client, user, shared_address)
    [token_1], [token_2] = [await _new_address_tokens(bus, u, 1) for u in (first, second)]
    answers = await asyncio.gather(
        *(client.post(f"{API}/email-verifications", json={"token": t}) for t in (token_1, token_2))
    )
    assert sorted(a.status_code for a in answers) == [200, 409]
    winner, loser = (first, second) if answers[0].status_code == 200 else (second, first)
    assert await _email(client, winner) == (shared_address, True, None)
    # The loser keeps its address, its change waits out its time, its link is spent.
    assert await _email(client, loser) == (loser.email, True, shared_address)
    lost = token_2 if loser is second else token_1
    await _confirm(client, lost, 400)


async def test_address_changes_are_throttled_whatever_the_address(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Each change mails a link to an address the caller chose: five a day go free, then
    the account waits, whichever address it asks for (taken or not)."""
    user = await active_user(client, bus)
    others = [await active_user(client, bus) for _ in range(2)]
    headers, password = user.headers, user.password

    async def change(address: str) -> httpx.Response:
        body = {"email": address, "current_password": password}
        return await client.patch(f"{API}/me", json=body, headers=headers)

    taken = [await change(o.email) for o in others]
    assert [t.status_code for t in taken] == [200, 200]
    # Sent together, they are still counted one after another: three more go through.
    together = await asyncio.gather(*(change(unique_email(f"free{n}")) for n in range(6)))
    statuses = sorted(t.status_code for t in together)
    assert statuses == [200] * 3 + [429] * 3, [t.text for t in together]
    refused = next(t for t in together if t.status_code == 429)
    assert refused.json()["type"].endswith("/email-change-throttled")
    assert int(refused.headers["retry-after"]) >= 1
    last = (await client.get(f"{API}/me", headers=headers)).json()["pending_email"]
    assert last in [t.json()["pending_email"] for t in together if t.status_code == 200]
    # Another account is not slowed down by this one's changes.
    other = others[0]
    mine = await client.patch(
        f"{API}/me",
        json={"email": unique_email("mine"), "current_password": other.password},
        headers=other.headers,
    )
    assert mine.status_code == 200, mine.text
