"""Requests and feedback: threads with operator replies; card numbers refused (P-09)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import unicodedata
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import PlatformSettings
from shared.events.topics import all_topics
from shared.pii import luhn_valid
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    User,
    active_user,
    new_operator,
    read_topics_from_beginning,
    submit_request,
)

T = TypeVar("T")


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=13, max_value=19))
    first = draw(st.sampled_from(["4", "51", "37", "6011", "35"]))
    rest = draw(
        st.text(
            alphabet="0123456789",
            min_size=length - len(first) - 1,
            max_size=length - len(first) - 1,
        )
    )
    return _luhn_complete(first + rest)


# Between groups of four: what keyboards, web pages (no-break and thin spaces), wrapped
# lines and invoice-style references (dots, slashes) put there, one to three characters.
SEPARATORS = [
    " ", "-", ".", "/", "\u00a0", "\u2009", "\u202f", "  ", "\t", "\n", "\r\n", " - ", " / ",
]  # fmt: skip
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


@st.composite
def formatted(draw: st.DrawFn, digits: str) -> str:
    style = draw(st.sampled_from(["plain", "one separator", "mixed separators"]))
    if style == "plain":
        written = digits
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
        one = draw(st.sampled_from(SEPARATORS))
        written = groups[0]
        for group in groups[1:]:
            gap = one if style == "one separator" else draw(st.sampled_from(SEPARATORS))
            written += gap + group
    return written.translate(FULL_WIDTH) if draw(st.booleans()) else written


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.!?'", max_size=40)
FIELDS = ["request", "message", "name", "device"]


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on its own loop in a worker thread (this test is synchronous)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
async def fuzz_user(client: httpx.AsyncClient, bus: BusTail) -> tuple[User, str]:
    user = await active_user(client, bus)
    created = await client.post(
        f"{API}/me/requests", json={"category": "feedback", "text": "fine"}, headers=user.headers
    )
    return user, created.json()["id"]


@pytest.mark.promise("P-09")
def test_fuzzed_card_numbers_are_refused_and_leave_no_trace(
    platform: str, fuzz_user: tuple[User, str], settings: PlatformSettings
) -> None:
    user, request_id = fuzz_user
    submitted: list[str] = []

    with httpx.Client(base_url=platform, headers=user.headers, timeout=30) as http:
        name_before = http.get(f"{API}/me").json()["name"]
        thread_before = http.get(f"{API}/me/requests/{request_id}").json()

        @settings_for_fuzz
        @given(data=st.data())
        def attempt(data: st.DataObject) -> None:
            number = data.draw(card_numbers())
            text = data.draw(WORDS) + " " + data.draw(formatted(number)) + " " + data.draw(WORDS)
            field = data.draw(st.sampled_from(FIELDS))
            submitted.append(number)
            if field == "request":
                r = http.post(f"{API}/me/requests", json={"category": "repair", "text": text})
            elif field == "message":
                r = http.post(f"{API}/me/requests/{request_id}/messages", json={"text": text})
            elif field == "name":
                r = http.patch(f"{API}/me", json={"name": text[:200]})
            else:
                r = http.post(
                    f"{API}/me/devices", json={"model": text[:100], "damage_state": "other"}
                )
            assert r.status_code == 422, (field, r.status_code)
            problem = r.json()
            assert problem["type"].endswith("/card-number")
            assert "card number" in problem["detail"]
            assert not _has_any(r.text, [number])  # the refusal never echoes it

        attempt()
        # Nothing was half-applied: no device, no request, no message, the same name.
        assert http.get(f"{API}/me/devices").json() == []
        assert len(http.get(f"{API}/me/requests").json()) == 1
        assert http.get(f"{API}/me/requests/{request_id}").json() == thread_before
        assert http.get(f"{API}/me").json()["name"] == name_before
        # Decrypted, as the user gets it back: sealed columns cannot show a number raw.
        export = http.get(f"{API}/me/export")
        assert export.status_code == 200
        assert user.email in export.text  # the export is this user's data, decrypted

    async def scan() -> tuple[str, list[bytes]]:
        text = ""
        for database in ("accounts", "notifier"):
            conn = await asyncpg.connect(settings.database_dsn(database))
            try:
                tables = await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
                for t in tables:
                    rows = await conn.fetch(f'SELECT t::text AS line FROM "{t["tablename"]}" t')
                    text += "\n".join(r["line"] for r in rows)
            finally:
                await conn.close()
        topics = [t.name for t in all_topics()]
        return text, await read_topics_from_beginning(settings, topics)

    dump, records = _in_thread(scan())
    assert len(submitted) >= 25
    assert not _has_any(export.text, submitted)
    assert not _has_any(dump, submitted)
    assert not _has_any(b"\n".join(records).decode("utf-8", "replace"), submitted)


# JSON may escape what sits between the digits (a no-break space as six characters).
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\[bfnrt/]")
# Whatever the card detector takes for a separator, after NFKC (which makes full-width
# digits and signs ASCII, and no-break and thin spaces plain ones): any run of them.
_SEPARATORS = re.compile(r"[\s.\-/\u2010-\u2013\u2212\u200b\u2060\ufeff]+")


# The scan reads every table and topic of the run: hundreds of megabytes, which copies
# of the whole (unescaped, normalised) would multiply. Chunks overlap by more than the
# longest way a card can be written (19 digits, 18 gaps of 3 separators, 6 characters
# each when escaped), so none is cut in two.
_CHUNK, _OVERLAP = 1 << 20, 1024


def _has_any(text: str, numbers: list[str]) -> bool:
    """Whether any number appears in ``text``, also written with any separators between
    its digits, in full-width digits or JSON-escaped."""
    for start in range(0, max(len(text), 1), _CHUNK):
        chunk = text[start : start + _CHUNK + _OVERLAP]
        unescaped = _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else " ", chunk)
        if not unescaped.isascii():  # NFKC leaves ASCII as it is
            unescaped = unicodedata.normalize("NFKC", unescaped)
        digits_only = _SEPARATORS.sub("", unescaped)
        if any(n in digits_only for n in numbers):
            return True
    return False


settings_for_fuzz = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def test_a_thread_shows_the_users_messages_and_operator_replies(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> None:
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    request_id = await submit_request(client, user, "My screen is cracked")
    submitted = await bus.event("request.submitted.", user.id, request_id=request_id)
    assert set(submitted["data"]) == {"user_id", "request_id", "category"}  # no text
    reply = await client.post(
        f"{API}/operator/requests/{request_id}/replies",
        json={"text": "Bring it in tomorrow"},
        headers=support.headers,
    )
    assert reply.status_code == 201
    replied = await bus.event("request.replied.", user.id, request_id=request_id)
    assert replied["data"]["reply_id"] == reply.json()["reply_id"]
    thread = (await client.get(f"{API}/me/requests/{request_id}", headers=user.headers)).json()
    assert thread["status"] == "answered"
    assert [(m["author"], m["text"]) for m in thread["messages"]] == [
        ("user", "My screen is cracked"),
        ("operator", "Bring it in tomorrow"),
    ]
    listed = (await client.get(f"{API}/me/requests", headers=user.headers)).json()
    assert [r["id"] for r in listed] == [request_id]
    gone = await client.delete(f"{API}/me/requests/{request_id}", headers=user.headers)
    assert gone.status_code == 204
    assert (await client.get(f"{API}/me/requests", headers=user.headers)).json() == []
