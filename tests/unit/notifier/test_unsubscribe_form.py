"""The one-click POST's body is read as RFC 8058 senders write it."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.notifier.routes.unsubscribe import form_fields

URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse(await form_fields(request))


async def _fields(**post: object) -> dict[str, str]:
    app = Starlette(routes=[Route("/", _echo, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/", **post)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    fields: dict[str, str] = response.json()
    return fields


@pytest.mark.parametrize(
    "body",
    [
        b"List-Unsubscribe=One-Click",
        b"List-Unsubscribe=One-Click\r\n",  # mail clients may end the body with a line break
        b"List-Unsubscribe=One-Click\n",
        b"List-Unsubscribe=One-Click&List-Unsubscribe=ignored",
    ],
)
async def test_a_urlencoded_one_click_body_is_recognised(body: bytes) -> None:
    assert (await _fields(content=body, headers=URLENCODED))["List-Unsubscribe"] == "One-Click"


@pytest.mark.parametrize("value", ["One-Click", "One-Click\r\n"])
async def test_a_multipart_one_click_body_is_recognised(value: str) -> None:
    # What RFC 8058 section 3.1 says senders SHOULD post.
    fields = await _fields(files={"List-Unsubscribe": (None, value)})
    assert fields["List-Unsubscribe"] == "One-Click"


async def test_a_body_without_a_form_type_is_read_as_urlencoded() -> None:
    fields = await _fields(content=b"List-Unsubscribe=One-Click", headers={})
    assert fields["List-Unsubscribe"] == "One-Click"


async def test_the_pages_all_email_button_is_recognised() -> None:
    assert await _fields(content=b"scope=all\r\n", headers=URLENCODED) == {"scope": "all"}


@pytest.mark.parametrize("body", [b"", b"List-Unsubscribe=", b"List-Unsubscribe=One-Clicks"])
async def test_anything_else_is_not_a_one_click(body: bytes) -> None:
    fields = await _fields(content=body, headers=URLENCODED)
    assert fields.get("List-Unsubscribe") != "One-Click"
