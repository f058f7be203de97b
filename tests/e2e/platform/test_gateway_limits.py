"""The gateway's own protections, on the running nginx: HSTS on https, JSON problems
where a location declares its own error pages, no unsubscribe token in the access log,
and a cap on the live streams one address holds open."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from deploy.local import gateway
from deploy.local.layout import Layout
from tests.e2e.accounts.support import admin
from tests.e2e.notifier.support import operator_token, sse_events, user_token
from tests.e2e.platform.journeys import needs
from tests.support.request_ids import kept_request_id

# The local gateway is reached as localhost: HSTS there would pin every local tool's
# http://localhost for a year, so it clears any pin instead (a real host gets a year).
HSTS = "max-age=0"


async def test_hsts_is_sent_over_https_only(platform: str) -> None:
    layout = Layout.from_env()
    tls = ssl.create_default_context(cafile=str(layout.tls / "ca.pem"))
    secure = f"https://localhost:{layout.ports.gateway_tls}"
    async with httpx.AsyncClient(verify=tls, timeout=30) as client:
        page = await client.get(f"{secure}/")
        problem = await client.get(f"{secure}/api/nope/x")  # a named location's body
        plain = await client.get(f"{platform}/")
    assert (page.status_code, problem.status_code, plain.status_code) == (200, 404, 200)
    assert page.headers["strict-transport-security"] == HSTS
    assert problem.headers["strict-transport-security"] == HSTS
    assert "strict-transport-security" not in plain.headers


async def test_a_body_too_large_for_the_gpc_resource_is_a_json_problem(platform: str) -> None:
    needs("analytics")
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        response = await client.post("/.well-known/gpc.json", content=b"x" * (65 * 1024))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413


@pytest.mark.parametrize(
    ("what", "request_kwargs", "status"),
    [
        ("a query too long", {"url": "/api/analytics/trends/public?site=" + "a" * 9000}, 414),
        ("a header too large", {"url": "/api/accounts/me", "headers": {"X-Big": "a" * 9000}}, 400),
        ("the API root", {"url": "/api"}, 404),
    ],
)
async def test_what_nginx_itself_refuses_is_a_json_problem_too(
    platform: str, what: str, request_kwargs: dict[str, Any], status: int
) -> None:
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        response = await client.get(**request_kwargs)
    assert response.status_code == status, what
    assert response.headers["content-type"] == "application/problem+json", what
    assert response.json()["status"] == status


# Requests no HTTP client library sends (httpx normalises paths), written on a socket.
# nginx refuses each while reading the request line or headers: with no URI yet, an
# error page that was a named location became nginx's own HTML 500.
_HEAD = b"Host: localhost\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    ("what", "raw", "status"),
    [
        ("a path above the root", b"GET /../x HTTP/1.1\r\n" + _HEAD, 400),
        ("an encoded climb", b"GET /api/accounts/%2e%2e/%2e%2e/%2e%2e/x HTTP/1.1\r\n" + _HEAD, 400),
        ("a NUL in the path", b"GET /api/notifier/%00 HTTP/1.1\r\n" + _HEAD, 400),
        ("a control character", b"GET /api/notifier/inbox\x01 HTTP/1.1\r\n" + _HEAD, 400),
        ("TRACE", b"TRACE /api/notifier/inbox HTTP/1.1\r\n" + _HEAD, 405),
        (
            "an unknown transfer coding",
            b"POST /api/notifier/inbox HTTP/1.1\r\n" + _HEAD
            + b"Transfer-Encoding: gzip, chunked\r\n",
            501,
        ),
        ("HTTP/2 on the plain port", b"GET /api/notifier/inbox HTTP/2.0\r\n" + _HEAD, 505),
    ],
)  # fmt: skip
async def test_a_request_nginx_cannot_read_is_a_json_problem_not_a_500(
    platform: str, what: str, raw: bytes, status: int
) -> None:
    url = httpx.URL(platform)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(raw + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(15):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (h.split(": ", 1) for h in header_lines)}
    assert int(status_line.split()[1]) == status, (what, status_line)
    assert headers["content-type"] == "application/problem+json", what
    assert headers["x-content-type-options"] == "nosniff", what
    assert json.loads(body)["status"] == status, what


async def test_the_access_log_leaves_unsubscribe_tokens_out(platform: str) -> None:
    needs("notifier")
    token = uuid.uuid4().hex + uuid.uuid4().hex  # well formed, unknown: a 404 page
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        line = await _logged(client, f"/api/notifier/unsubscribe/{token}", 404)
    assert token not in line
    assert json.loads(line)["path"] == "/api/notifier/unsubscribe/{token}"


async def test_the_access_log_leaves_out_a_mailed_links_token_sent_as_a_path(
    platform: str,
) -> None:
    """A link rewriter may encode the "#" of /reset-password#token=...: the page is not
    found, and its path, token and all, would be logged (when the token has too few
    digits to look like a number)."""
    token = _token_with_few_digits()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        line = await _logged(client, f"/reset-password%23token={token}", 404)
    assert token not in line
    assert json.loads(line)["path"] == "/reset-password#{token}"


def _token_with_few_digits() -> str:
    """A reset token as accounts mails them, with fewer than five digits (one in six)."""
    while True:
        token = secrets.token_urlsafe(32)
        if sum(c.isdigit() for c in token) < 5:
            return token


async def test_the_access_log_names_no_one_by_id(platform: str) -> None:
    needs("accounts")
    subject, device = uuid.uuid4(), uuid.uuid4()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        user = await _logged(client, f"/api/accounts/operator/users/{subject}", 401)
        item = await _logged(client, f"/api/accounts/me/devices/{device}", 401)
    assert str(subject) not in user
    assert str(device) not in item
    assert json.loads(user)["path"] == "/api/accounts/operator/users/{id}"
    assert json.loads(item)["path"] == "/api/accounts/me/devices/{id}"


@pytest.mark.promise("P-09")
async def test_the_access_log_keeps_no_card_number_or_address_a_caller_sent(
    platform: str,
) -> None:
    needs("accounts")
    card, email = "4111-1111-1111-1111", "jane.roe@example.com"
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        in_path = await _logged(client, f"/api/accounts/me/devices/{card}", 401)
        address = await _logged(client, f"/api/accounts/me/devices/{email}", 401)
        as_id = await _logged(client, "/api/accounts/me", 401, request_id="4111111111111111")
    assert json.loads(in_path)["path"] == "/api/accounts/me/devices/{id}"
    assert json.loads(address)["path"] == "/api/accounts/me/devices/{id}"
    assert "4111" not in in_path + as_id
    assert "jane" not in address


async def _logged(
    client: httpx.AsyncClient, path: str, status: int, request_id: str | None = None
) -> str:
    """The access log's line for one GET of ``path`` (found by the request id the
    gateway answered with: the caller's, ``request_id`` or a fresh one, if it kept it)."""
    request_id = request_id or kept_request_id("log-check")
    response = await client.get(path, headers={"X-Request-Id": request_id})
    assert response.status_code == status, response.text
    request_id = response.headers["x-request-id"]
    log = gateway.access_log(Layout.from_env())
    deadline = time.monotonic() + 10
    while not (lines := [x for x in log.read_text().splitlines() if request_id in x]):
        assert time.monotonic() < deadline, "the request never reached the access log"
        await asyncio.sleep(0.2)
    [line] = lines
    return line


async def test_an_incident_for_as_many_users_as_the_api_takes_passes_the_gateway(
    platform: str,
) -> None:
    """P-17: 20,000 affected users an incident (the API's limit), not the 1,700 a
    64 KiB body holds. The title left empty: the service, having read the whole body,
    refuses that alone (no notices sent to 20,000 made-up users)."""
    needs("accounts")
    body = {
        "title": "",
        "message": "m" * 5000,
        "audience": "listed",
        "user_ids": [str(uuid.uuid4()) for _ in range(20_000)],
    }
    async with httpx.AsyncClient(base_url=platform, timeout=60) as client:
        operator = await admin(client)
        answer = await client.post(
            "/api/accounts/operator/incidents", json=body, headers=operator.headers
        )
    assert answer.status_code == 422, answer.text[:500]
    assert [e["location"] for e in answer.json()["errors"]] == ["body.title"]


async def test_a_replay_of_as_many_dead_letters_as_the_api_takes_passes_the_gateway(
    platform: str,
) -> None:
    needs("notifier")
    body = {"delivery_ids": list(range(2**62, 2**62 + 10_000))}  # none of them exists
    async with httpx.AsyncClient(base_url=platform, timeout=60) as client:
        answer = await client.post(
            "/api/notifier/ops/dead-letters/replay", json=body, headers=operator_token("support")
        )
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json() == {"replayed": 0}


async def test_a_body_past_a_bulk_calls_own_limit_is_still_refused(platform: str) -> None:
    needs("notifier")
    async with httpx.AsyncClient(base_url=platform, timeout=60) as client:
        answer = await client.post(
            "/api/notifier/ops/dead-letters/replay",
            content=b"x" * (1024 * 1024 + 1),
            headers={"Content-Type": "application/json", **operator_token("support")},
        )
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"


STREAM = gateway.INBOX_STREAM


async def test_one_address_holds_a_few_live_streams_at_most(platform: str) -> None:
    needs("notifier")
    async with (
        httpx.AsyncClient(base_url=platform, timeout=30) as client,
        AsyncExitStack() as held,
    ):
        for _ in range(gateway.STREAMS_PER_CLIENT):
            stream = client.stream("GET", STREAM, headers=user_token(uuid.uuid4()))
            response = await held.enter_async_context(stream)
            assert response.status_code == 200
            # Read up to "ready" without leaving the iteration: leaving it closes the
            # response, and a closed stream no longer counts against the limit.
            events = sse_events(response)
            held.push_async_callback(events.aclose)
            async with asyncio.timeout(15):
                while (await anext(events))[0] != "ready":
                    pass
        async with asyncio.timeout(15):  # a stream let through would never end
            refused = await client.get(STREAM, headers=user_token(uuid.uuid4()))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429

    # Closed streams give their places back.
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        while True:
            async with client.stream("GET", STREAM, headers=user_token(uuid.uuid4())) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, again.status_code
            await asyncio.sleep(0.2)
