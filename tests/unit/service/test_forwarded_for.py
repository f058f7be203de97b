"""A service API believes X-Forwarded-For only from its trusted proxies (the gateway):
any other caller that reaches it is its own client, whatever address it claims, so it
cannot escape the per-address login back-off nor invent analytics visitors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request

from services.accounts.routes.auth import _client_address as login_address
from services.analytics.routes.collector import _client_address as visitor_address
from shared.config import PlatformSettings
from shared.service import Runtime, service_app
from shared.service import api as service_api
from shared.service.forwarded import UntrustableProxy, trusted_proxies

GATEWAY = "10.201.7.2"  # deploy/compose.py's gateway address
NEIGHBOUR = "10.201.7.140"  # any other container of the compose network
CLAIMED = "203.0.113.9"


def _app(**settings: Any) -> FastAPI:
    """An API built as the services build theirs, whose route answers the address each
    service's own helper reads from the request."""
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        return {"login": login_address(request), "visitor": visitor_address(request)}

    @asynccontextmanager
    async def start(_: FastAPI) -> AsyncIterator[Runtime]:
        raise AssertionError("no lifespan runs over ASGITransport")
        yield  # pragma: no cover

    return service_app(
        service="demo", title="demo", settings=PlatformSettings(**settings), routers=[router],
        start=start,
    )  # fmt: skip


async def _seen(app: FastAPI, peer: str, forwarded: str | None = CLAIMED) -> str:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/api/demo/whoami", headers=headers)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["login"] == seen["visitor"]  # both services read the same client
    address: str = seen["login"]
    return address


async def test_a_spoofed_header_from_an_untrusted_peer_is_ignored() -> None:
    app = _app(trusted_proxies=GATEWAY)
    assert await _seen(app, NEIGHBOUR) == NEIGHBOUR
    # A new claim on each attempt changes nothing: the back-off keeps counting the peer.
    assert await _seen(app, NEIGHBOUR, "198.51.100.1") == NEIGHBOUR


async def test_the_trusted_proxy_header_names_the_client() -> None:
    app = _app(trusted_proxies=GATEWAY)
    assert await _seen(app, GATEWAY) == CLAIMED
    assert await _seen(app, GATEWAY, forwarded=None) == GATEWAY


async def test_a_trusted_network_is_accepted() -> None:
    app = _app(trusted_proxies="10.201.7.0/28")
    assert await _seen(app, GATEWAY) == CLAIMED
    assert await _seen(app, NEIGHBOUR) == NEIGHBOUR


async def test_the_last_entry_is_the_one_the_proxy_saw() -> None:
    # The gateway overwrites the header with one entry; were one appended instead, the
    # entries before it are the client's own claims and are not believed.
    app = _app(trusted_proxies=GATEWAY)
    assert await _seen(app, GATEWAY, f"198.51.100.1, {CLAIMED}") == CLAIMED


async def test_by_default_only_loopback_is_trusted() -> None:
    app = _app()
    assert PlatformSettings().trusted_proxies == "127.0.0.1,::1"
    assert await _seen(app, "127.0.0.1") == CLAIMED
    assert await _seen(app, "::1") == CLAIMED
    assert await _seen(app, NEIGHBOUR) == NEIGHBOUR


@pytest.mark.parametrize("setting", ["*", "gateway", "10.201.7.1/24", "10.201.7.2, nope"])
def test_an_entry_that_is_no_address_or_network_is_refused(setting: str) -> None:
    # uvicorn would keep it as a literal no peer matches, or ("*") trust every peer.
    with pytest.raises(UntrustableProxy):
        trusted_proxies(setting)
    with pytest.raises(UntrustableProxy):
        _app(trusted_proxies=setting)


def test_nothing_trusted_is_allowed() -> None:
    assert trusted_proxies("") == []
    assert trusted_proxies(" 127.0.0.1 , ::1 ") == ["127.0.0.1", "::1"]


def test_uvicorn_does_not_rewrite_the_client_before_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvicorn's own proxy headers would trust FORWARDED_ALLOW_IPS (loopback by default):
    # a loopback peer's claim would reach the app's middleware as the peer itself.
    seen: dict[str, Any] = {}
    monkeypatch.setattr(service_api, "start_process", lambda *_: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    service_api.serve(_app(), service="demo", port=1)
    assert seen["proxy_headers"] is False
