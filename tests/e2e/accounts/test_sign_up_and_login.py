"""Sign-up, verification, login, throttling, sessions (promises P-01, P-08, P-26)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local.gateway import access_log
from deploy.local.layout import Layout
from services.accounts.answer_floor import ANSWER_FLOOR_SECONDS
from services.accounts.config import AccountsSettings
from services.accounts.context import EMAIL_INDEX, THROTTLE_CLIENT
from services.accounts.security import hash_password, secret_hash
from shared.config import PlatformSettings
from shared.events.topics import all_topics
from shared.vault.crypto import blind_index
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    User,
    active_user,
    consented_child,
    gateway_trace_ids,
    log_in,
    new_operator,
    read_topics_from_beginning,
    sign_up,
    unique_email,
    verify,
)
from tests.support.mailbox import eventually
from tests.support.request_ids import kept_request_id

API_LOG = Layout.from_env().log("accounts-api")
# The gateway's access log: one line per request, with its id (never a body or a query).
ACCESS_LOG = access_log(Layout.from_env()).name


async def dump_tables(db: asyncpg.Connection) -> dict[str, str]:
    """Every table of the accounts database, as text."""
    tables = await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    dump = {}
    for t in tables:
        rows = await db.fetch(f'SELECT t::text AS line FROM "{t["tablename"]}" t')
        dump[t["tablename"]] = "\n".join(r["line"] for r in rows)
    return dump


def _platform_logs() -> dict[str, bytes]:
    """Every log of the stack and the services (gateway, PostgreSQL and Kafka included)."""
    return {log.name: log.read_bytes() for log in API_LOG.parent.glob("*.log")}


def traces_of(secret: str) -> list[bytes]:
    """The secret as text, and as the hex and bytes a bytea column or record would show."""
    return [secret.encode(), secret.encode().hex().encode()]


@pytest.mark.promise("P-01")
async def test_sign_up_stores_exactly_the_declared_fields_and_the_password_nowhere(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection, settings: PlatformSettings
) -> None:
    password = f"Plain-{uuid.uuid4().hex}"
    new_password = f"Plain-{uuid.uuid4().hex}"
    user = await sign_up(client, password=password, birth_date="1990-04-02")
    await verify(client, bus, user)
    await log_in(client, user)
    # The password also travels in a failed login and a password change; both say who
    # the browser is, which is not among the declared fields either.
    agent = {"User-Agent": f"ProbeAgent/{uuid.uuid4().hex}"}
    # Each with a request id of its own, which the gateway logs and echoes: the logs
    # searched below are shown to hold these very requests.
    ids = [kept_request_id("p01") for _ in range(2)]
    failed = await client.post(
        f"{API}/sessions",
        json={"email": unique_email(), "password": password},
        headers={**agent, "X-Request-Id": ids[0]},
    )
    assert failed.status_code == 401, failed.text
    changed = await client.post(
        f"{API}/me/password",
        json={"current_password": password, "new_password": new_password},
        headers={**user.headers, **agent, "X-Request-Id": ids[1]},
    )
    assert changed.status_code == 200, changed.text
    assert [failed.headers["x-request-id"], changed.headers["x-request-id"]] == ids

    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user.id))
    assert row is not None
    # Every column, written here independently of the schema: a new one (an address, a
    # user agent, a phone) fails this until it is declared and justified.
    assert set(row.keys()) == {
        "id", "email_index", "email", "name", "password_hash", "birth_date", "age_band",
        "guardian_email", "email_verified", "guardian_consented", "active",
        "marketing_email", "personalisation", "tracking_opt_out", "locale", "created_at",
        "updated_at", "pending_email", "pending_email_index", "pending_email_until",
        "pending_change", "login_locked",
    }  # fmt: skip
    personal = {k for k, v in row.items() if isinstance(v, bytes)}
    # Exactly the declared fields: name, email (+ its blind index), birth date; nothing else.
    assert personal == {"name", "email", "email_index", "birth_date"}
    assert row["guardian_email"] is None
    assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    for column in ("name", "email", "birth_date"):
        assert user.name.encode() not in row[column]
        assert user.email.encode() not in row[column]

    await bus.card(user.id, active=True)
    # Everything those requests did is written before the stores are searched: the
    # gateway logged both (the trace id each carried on) ...
    traces = await gateway_trace_ids(ids)
    # ... the password change's notice, queued last, is on Kafka, and accounts' outbox
    # holds no event of the change nor of the user any more (the relay deletes what it
    # published): the user's events are all on Kafka.
    change = traces[ids[1]]
    await bus.wait_for(
        lambda r: (
            r.topic == "notifier.commands"
            and r.value is not None
            and change in str(r.value.get("traceparent"))
        ),
    )
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM bus_outbox WHERE convert_from(value, 'UTF8') LIKE ANY($1)",
            [f"%{change}%", f"%{user.id}%"],
        ),
        lambda n: n == 0,
    )
    dump = await dump_tables(db)
    logs = await asyncio.to_thread(_platform_logs)
    assert API_LOG.name in logs
    # The lines of the two requests that carried the password are among those searched.
    for request_id in ids:
        lines = [name for name, text in logs.items() if f'"{request_id}"'.encode() in text]
        assert ACCESS_LOG in lines, (request_id, lines)
    records = await read_topics_from_beginning(settings, [t.name for t in all_topics()])
    assert not [t for t, text in dump.items() if agent["User-Agent"] in text]
    assert not any(agent["User-Agent"].encode() in r for r in records)
    for secret in (password, new_password):
        for trace in traces_of(secret):
            leaks = [t for t, text in dump.items() if trace in text.encode()]
            assert not leaks, f"password found in tables {leaks}"
            logged = [name for name, text in logs.items() if trace in text]
            assert not logged, f"password found in logs {logged}"
            assert not any(trace in r for r in records), "password found on a Kafka topic"
    # Name and email are sealed: in no table in clear (the outbox is relayed and emptied).
    for table, text in dump.items():
        if table != "bus_outbox":
            assert user.email not in text, table
            assert user.name not in text, table
    # Nor on any topic: the contact card carries them sealed with the user's key.
    assert bus.sealed_cards(user.id)  # a card did go out
    assert not [r for r in records if user.email.encode() in r or user.name.encode() in r]


async def test_login_answers_the_same_whether_the_email_exists_or_not(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    unknown = unique_email()

    async def attempt(email: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = await client.post(
            f"{API}/sessions", json={"email": email, "password": "wrong-password-1"}
        )
        return response, time.perf_counter() - started

    # Interleaved, so a burst of load on the machine falls on both; four each, below the
    # account's free failures.
    known_runs, unknown_runs = [], []
    for _ in range(4):
        known_runs.append(await attempt(user.email))
        unknown_runs.append(await attempt(unknown))
    for (known, _), (other, _) in zip(known_runs, unknown_runs, strict=True):
        assert known.status_code == other.status_code == 401
        strip = ("trace_id",)
        assert {k: v for k, v in known.json().items() if k not in strip} == {
            k: v for k, v in other.json().items() if k not in strip
        }
    # The fastest of each: noise only ever adds time.
    known_time = min(t for _, t in known_runs)
    unknown_time = min(t for _, t in unknown_runs)
    # Both run argon2 (about 20 ms): the same timing class, no fast path for strangers.
    assert unknown_time > 0.010
    assert known_time > 0.010
    assert 1 / 3 < unknown_time / known_time < 3


async def _wrong(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(f"{API}/sessions", json={"email": email, "password": "not-it-123"})


@pytest.mark.promise("P-08")
async def test_brute_force_is_throttled_with_growing_back_off(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    statuses = [(await _wrong(client, user.email)).status_code for _ in range(5)]
    assert statuses == [401] * 5  # a few typos are free
    # The 5th failure starts a back-off (4 s in these tests): even the right password
    # must wait.
    blocked = await client.post(
        f"{API}/sessions", json={"email": user.email, "password": user.password}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert blocked.json()["type"].endswith("/login-throttled")
    await asyncio.sleep(float(blocked.headers["retry-after"]) + 0.2)
    assert (await _wrong(client, user.email)).status_code == 401  # 6th failure: twice as long
    again = await _wrong(client, user.email)
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > int(blocked.headers["retry-after"])  # it grows
    # An unknown email is throttled the same way: no hint that it is not registered.
    stranger = unique_email()
    stranger_statuses = [(await _wrong(client, stranger)).status_code for _ in range(6)]
    assert stranger_statuses == [401] * 5 + [429]
    await asyncio.sleep(float(again.headers["retry-after"]) + 0.2)
    await log_in(client, user)  # after the wait, the right password works


@pytest.mark.promise("P-08")
async def test_an_old_token_fails_after_a_password_change(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    other_device = User(user.id, user.email, user.password, user.name)
    await log_in(client, other_device)
    for session in (user, other_device):
        assert (await client.get(f"{API}/me", headers=session.headers)).status_code == 200
    new_password = f"new-{uuid.uuid4().hex}"
    changed = await client.post(
        f"{API}/me/password",
        json={"current_password": user.password, "new_password": new_password},
        headers=user.headers,
    )
    assert changed.status_code == 200
    for session in (user, other_device):  # every session ends, this one's too
        assert (await client.get(f"{API}/me", headers=session.headers)).status_code == 401
        refreshed = await client.post(
            f"{API}/sessions/refresh", json={"refresh_token": session.refresh}
        )
        assert refreshed.status_code == 401
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await client.get(f"{API}/me", headers=fresh)).status_code == 200
    old = await client.post(
        f"{API}/sessions", json={"email": user.email, "password": user.password}
    )
    assert old.status_code == 401
    user.password = new_password
    await log_in(client, user)


@pytest.mark.promise("P-08")
async def test_a_login_racing_a_password_change_starts_no_session_the_change_misses(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection
) -> None:
    """A login that verified the old password while a change was committing the new one
    must not commit a session the change's revocation did not see: it waits for the
    change and is refused, or the change waits for its session and ends it."""
    user = await active_user(client, bus)
    new_hash = await hash_password(f"new-{uuid.uuid4().hex}")
    credentials = {"email": user.email, "password": user.password}
    async with db.transaction():
        # A change under way holds the user's row (replace_password locks it first).
        await db.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", uuid.UUID(user.id))
        login = asyncio.create_task(client.post(f"{API}/sessions", json=credentials))
        await asyncio.sleep(1.0)  # the old password verified; the login waits for the row
        assert not login.done()
        await db.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1", uuid.UUID(user.id), new_hash
        )
    answer = await login
    assert answer.status_code == 401, answer.text
    assert answer.json()["type"].endswith("/invalid-credentials")


@pytest.mark.promise("P-08")
async def test_parallel_failures_from_one_address_at_different_accounts_each_count(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: PlatformSettings
) -> None:
    """Password spraying: many accounts guessed at once from one address. Each failure
    must add to the address's counter; none may overwrite another's."""
    index_key = settings.blind_index_key.get_secret_value().encode()
    key = blind_index(index_key, THROTTLE_CLIENT, "127.0.0.1")  # what the gateway saw
    count = "SELECT failures FROM login_throttle WHERE key = $1"

    async def fail() -> int:
        wrong = {"email": unique_email("spray"), "password": f"wrong-{uuid.uuid4().hex}"}
        return (await client.post(f"{API}/sessions", json=wrong)).status_code

    assert await fail() == 401  # the counter exists, in a fresh window
    before = await db.fetchval(count, key)
    assert before is not None
    assert await asyncio.gather(*(fail() for _ in range(12))) == [401] * 12
    assert await db.fetchval(count, key) == before + 12


@pytest.mark.promise("P-08")
async def test_an_address_past_its_free_failures_is_made_to_wait_and_others_are_not(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: PlatformSettings, bus: BusTail
) -> None:
    """The per-address back-off through the gateway: a client on another loopback
    address (its own counter, so other tests never wait on it) already past its free
    failures fails once more, and its next login, with the right password, is refused
    429 with Retry-After. The same login from another address succeeds."""
    user = await active_user(client, bus)
    free = AccountsSettings(environment="test").accounts_client_free_failures
    index_key = settings.blind_index_key.get_secret_value().encode()
    key = blind_index(index_key, THROTTLE_CLIENT, "127.0.0.2")  # what the gateway will see
    credentials = {"email": user.email, "password": user.password}
    wrong = {"email": user.email, "password": f"wrong-{uuid.uuid4().hex}"}
    # Its earlier failures, as many as the free ones, primed rather than sent (a test
    # run's limit is 10^6: tests/support/platform.py), the last a moment ago.
    await db.execute(
        "INSERT INTO login_throttle (key, scope, failures, last_failure_at, blocked_until,"
        " locked) VALUES ($1, 'client', $2, now(), NULL, false) ON CONFLICT (key) DO UPDATE"
        " SET failures = $2, last_failure_at = now(), blocked_until = NULL, locked = false",
        key,
        free + 1,
    )
    other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    try:
        async with httpx.AsyncClient(
            base_url=str(client.base_url), transport=other, timeout=30
        ) as guesser:
            assert (await guesser.post(f"{API}/sessions", json=wrong)).status_code == 401
            refused = await guesser.post(f"{API}/sessions", json=credentials)
            assert refused.status_code == 429, refused.text
            assert refused.json()["type"].endswith("/login-throttled")
            assert int(refused.headers["Retry-After"]) >= 2  # 2^2 s past the free ones
            assert (
                await db.fetchval("SELECT failures FROM login_throttle WHERE key = $1", key)
                == free + 2
            )  # the refused attempt was not evaluated, so not counted
        allowed = await client.post(f"{API}/sessions", json=credentials)  # from 127.0.0.1
        assert allowed.status_code == 200, allowed.text
    finally:
        await db.execute("DELETE FROM login_throttle WHERE key = $1", key)


async def _refreshed(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(f"{API}/sessions/refresh", json={"refresh_token": token})


async def _session_ended(client: httpx.AsyncClient, pair: dict[str, Any]) -> bool:
    after = await _refreshed(client, pair["refresh_token"])
    me = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    return after.status_code == 401 and me.status_code == 401


async def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_session(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    first = await _refreshed(client, user.refresh)
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != user.refresh
    again = await _refreshed(client, rotated["refresh_token"])
    assert again.status_code == 200
    # The spent token comes back after its successor was used: a client that got the
    # successor does not ask again, so it was stolen. The whole family is revoked.
    reuse = await _refreshed(client, user.refresh)
    assert reuse.status_code == 401
    assert await _session_ended(client, again.json())


async def test_a_refresh_whose_answer_was_lost_is_answered_again(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection
) -> None:
    """Sent again at once (the answer lost, or two tabs at the same moment), a refresh
    gets the same successor, and the session goes on; once the grace has passed, the
    same reuse ends the session."""
    user = await active_user(client, bus)
    both = await asyncio.gather(*(_refreshed(client, user.refresh) for _ in range(2)))
    assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
    successor = both[0].json()["refresh_token"]
    assert both[1].json()["refresh_token"] == successor
    lost = await _refreshed(client, user.refresh)  # the first answer never came
    assert lost.status_code == 200
    assert lost.json()["refresh_token"] == successor
    me = await client.get(
        f"{API}/me", headers={"Authorization": f"Bearer {lost.json()['access_token']}"}
    )
    assert me.status_code == 200
    # Past the grace (30 s by default), the same retry is a stolen token's.
    await db.execute(
        "UPDATE refresh_tokens SET used_at = used_at - interval '31 seconds' WHERE token_hash = $1",
        secret_hash(user.refresh),
    )
    assert (await _refreshed(client, user.refresh)).status_code == 401
    assert await _session_ended(client, lost.json())


async def test_logout_ends_the_session(client: httpx.AsyncClient, bus: BusTail) -> None:
    user = await active_user(client, bus)
    assert (await client.delete(f"{API}/sessions/current", headers=user.headers)).status_code == 204
    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 401
    refreshed = await client.post(f"{API}/sessions/refresh", json={"refresh_token": user.refresh})
    assert refreshed.status_code == 401


async def test_an_unverified_account_cannot_log_in_and_a_link_works_once(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await sign_up(client)
    inactive = await client.post(
        f"{API}/sessions", json={"email": user.email, "password": user.password}
    )
    assert inactive.status_code == 401
    notice = await bus.notice(user.id, "verify_email")
    assert notice["category"] == "transactional"
    assert notice["recipient"] == "user"
    assert set(notice["params"]) == {"token", "link"}  # ids and links, no personal data
    token = notice["params"]["token"]
    assert (await client.post(f"{API}/email-verifications", json={"token": token})).json()["active"]
    # A retry (its answer lost on the way) is told the address is confirmed, not that
    # the link is invalid; an unknown link still is.
    again = await client.post(f"{API}/email-verifications", json={"token": token})
    assert again.status_code == 409, again.text
    assert again.json()["type"].endswith("/link-used")
    assert "already used" in again.json()["detail"]
    unknown = await client.post(f"{API}/email-verifications", json={"token": "x" * 43})
    assert unknown.status_code == 400
    assert unknown.json()["type"].endswith("/link-invalid")
    await log_in(client, user)


async def test_signing_up_with_a_taken_email_looks_like_a_new_sign_up(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    again = await client.post(
        f"{API}/users",
        json={"name": "Someone", "email": user.email, "password": "another-password"},
    )
    assert again.status_code == 202
    assert again.json()["status"] == "verification_sent"
    assert again.json()["user_id"] != user.id
    # Nor by its time: a taken address only reads one row, a new one seals and commits
    # several; both answer no sooner than the floor.
    new_email = unique_email()
    new = await client.post(
        f"{API}/users",
        json={"name": "Someone", "email": new_email, "password": "another-password"},
    )
    assert new.status_code == 202
    for answer in (again, new):
        assert answer.elapsed.total_seconds() >= ANSWER_FLOOR_SECONDS
    # Nor by logging in with the password chosen at that sign-up: the new, inactive
    # account answers as the taken address does (a wrong password for its owner), past
    # the throttle's free failures too.
    free = AccountsSettings(environment="test").accounts_account_free_failures
    answers: dict[str, list[tuple[int, str, str]]] = {}
    for email in (user.email, new_email):
        answers[email] = []
        # Each a failure: the back-off answers 429 once the free ones are spent (one more
        # try or two if the run stalls past the first, one-second back-off).
        while not answers[email] or answers[email][-1][0] != 429:
            assert len(answers[email]) < free + 3, answers[email]
            login = await client.post(
                f"{API}/sessions", json={"email": email, "password": "another-password"}
            )
            problem = login.json()
            answers[email].append((login.status_code, problem["type"], problem["detail"]))
    assert answers[user.email][:free] == answers[new_email][:free]
    assert {status for status, _, _ in answers[new_email][:free]} == {401}


@pytest.mark.promise("P-26")
async def test_under_13_sign_up_needs_a_guardian_and_never_gets_marketing(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    ten_years_ago = f"{time.gmtime().tm_year - 10}-01-01"
    refused = await client.post(
        f"{API}/users",
        json={
            "name": "Kid",
            "email": unique_email(),
            "password": "kid-password-1",
            "birth_date": ten_years_ago,
        },
    )
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/guardian-required")

    guardian = unique_email("guardian")
    child = await sign_up(client, birth_date=ten_years_ago, guardian_email=guardian)
    await verify(client, bus, child)
    waiting = await client.post(
        f"{API}/sessions", json={"email": child.email, "password": child.password}
    )
    assert waiting.status_code == 401  # inactive until the guardian consents
    card = await bus.card(child.id)
    assert card.guardian_email == guardian
    assert card.age_band == "under_13"
    assert card.active is False
    consent = await bus.notice(child.id, "parental_consent")
    assert consent["recipient"] == "guardian"
    confirmed = await client.post(
        f"{API}/guardian-consents", json={"token": consent["params"]["token"]}
    )
    assert confirmed.json() == {"status": "confirmed", "active": True}
    again = await client.post(
        f"{API}/guardian-consents", json={"token": consent["params"]["token"]}
    )
    assert again.status_code == 409, again.text  # a retry: the consent is recorded
    assert again.json()["type"].endswith("/link-used")
    assert "consent is recorded" in again.json()["detail"]
    await log_in(client, child)
    prefs = await client.put(
        f"{API}/me/preferences",
        json={"marketing_email": True, "personalisation": True, "tracking_opt_out": False},
        headers=child.headers,
    )
    assert prefs.json()["marketing_email"] is False
    assert prefs.json()["tracking_opt_out"] is True  # under 13 is treated as Do Not Track
    latest = await bus.card(child.id, active=True)
    assert latest.marketing_email is False


def _slug(response: httpx.Response) -> str:
    slug: str = response.json()["type"].rsplit("/", 1)[-1]
    return slug


def _shouted(email: str) -> str:
    """The same address as the blind index sees it, spelt otherwise."""
    return email.upper()


@pytest.mark.promise("P-26")
async def test_a_child_cannot_name_their_own_address_as_the_guardian(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: PlatformSettings
) -> None:
    # Both links (the address's and the consent's) would go to the child's mailbox.
    ten_years_ago = f"{time.gmtime().tm_year - 10}-01-01"
    email = unique_email("kid")
    for guardian in (email, _shouted(email)):
        refused = await client.post(
            f"{API}/users",
            json={"name": "Kid", "email": email, "password": "kid-password-1",
                  "birth_date": ten_years_ago, "guardian_email": guardian},
        )  # fmt: skip
        assert refused.status_code == 422, refused.text
        assert _slug(refused) == "guardian-is-account"
        assert [e["location"] for e in refused.json()["errors"]] == ["body.guardian_email"]
    index_key = settings.blind_index_key.get_secret_value().encode()
    made = await db.fetchval(
        "SELECT count(*) FROM users WHERE email_index = $1",
        blind_index(index_key, EMAIL_INDEX, email),
    )
    assert made == 0


async def _address(client: httpx.AsyncClient, user: User) -> tuple[str, str | None]:
    me = (await client.get(f"{API}/me", headers=user.headers)).json()
    return me["email"], me["pending_email"]


@pytest.mark.promise("P-26")
async def test_a_childs_address_change_cannot_make_it_the_guardians(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    child, guardian = await consented_child(client, bus)
    change = {"email": _shouted(guardian), "current_password": child.password}
    own = await client.patch(f"{API}/me", json=change, headers=child.headers)
    assert own.status_code == 422, own.text
    assert _slug(own) == "guardian-is-account"
    assert [e["location"] for e in own.json()["errors"]] == ["body.email"]
    assert await _address(client, child) == (child.email, None)  # no link mailed either


@pytest.mark.promise("P-26")
async def test_support_cannot_give_a_child_their_guardians_address(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    child, guardian = await consented_child(client, bus)
    support = await new_operator(client, root, "support")
    on_request = {"email": guardian, "request_reference": "TCK-26", "purpose": "asked by email"}
    typed = await client.patch(
        f"{API}/operator/users/{child.id}", json=on_request, headers=support.headers
    )
    assert typed.status_code == 422, typed.text
    assert _slug(typed) == "guardian-is-account"
    assert await _address(client, child) == (child.email, None)
    # The refusal tells the operator whose address it is: audited as a read of it.
    audited = await db.fetch(
        "SELECT action, fields, request_reference FROM audit_log"
        " WHERE subject_id = $1 AND operator_id = $2",
        uuid.UUID(child.id),
        uuid.UUID(support.id),
    )
    assert [(r["action"], list(r["fields"]), r["request_reference"]) for r in audited] == [
        ("read", ["guardian_email"], "TCK-26")
    ]
