"""Every service refuses request JSON holding text that is not valid Unicode (a lone
surrogate), with a 422 problem, before a route can fail on it with a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel

from shared.service.unicode import holds_invalid_unicode
from tests.unit.service.demo_api import demo_client

JSON = {"content-type": "application/json"}


class Named(BaseModel):
    name: str


def _client() -> httpx.AsyncClient:
    router = APIRouter()

    @router.post("/named")
    async def named(body: Named) -> dict[str, Any]:
        # What the routes of the platform do with text: make bytes of it (hash, seal).
        return {"name": body.name, "utf8": len(body.name.encode("utf-8"))}

    @router.post("/anything")
    async def anything(body: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(body)}

    @router.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return demo_client(router)


def _assert_refused(response: httpx.Response, raw: bytes) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/validation")
    assert [e["type"] for e in problem["errors"]] == ["unicode_invalid"]
    assert raw not in response.content  # the input is never echoed


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/demo/named", rb'{"name": "\ud800"}'),  # a lone high surrogate
        ("/api/demo/named", rb'{"name": "ab\uDC00cd"}'),  # a lone low one, upper case
        ("/api/demo/named", rb'{"name": "\ude00\ud83d"}'),  # a pair in the wrong order
        ("/api/demo/named", b'{"name": "\xed\xa0\x80"}'),  # a surrogate's UTF-8 bytes
        ("/api/demo/anything", rb'{"\udfff": 1}'),  # in a key
        ("/api/demo/anything", rb'{"a": [{"b": ["ok", "\ud800"]}]}'),  # nested
        ("/api/demo/raw", rb'{"name": "\ud800"}'),  # a route reading the body itself
    ],
)
async def test_a_lone_surrogate_anywhere_in_the_json_is_a_422_problem(
    path: str, raw: bytes
) -> None:
    async with _client() as client:
        _assert_refused(await client.post(path, content=raw, headers=JSON), raw)


async def test_a_surrogate_pair_and_other_text_are_accepted() -> None:
    async with _client() as client:
        emoji = await client.post(
            "/api/demo/named", content=rb'{"name": "\ud83d\ude00"}', headers=JSON
        )
        assert emoji.status_code == 200, emoji.text
        assert emoji.json() == {"name": "\N{GRINNING FACE}", "utf8": 4}
        accented = await client.post("/api/demo/named", json={"name": "Jos\u00e9 \u5f20"})
        assert accented.json()["name"] == "Jos\u00e9 \u5f20"
        # An escaped backslash followed by "ud800" is six characters of text.
        literal = await client.post(
            "/api/demo/named", content=rb'{"name": "\\ud800"}', headers=JSON
        )
        assert literal.json()["name"] == "\\ud800"


async def test_a_body_in_chunks_is_checked_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"name": "\\ud8', b'00"}'):  # the escape split across chunks
            yield part

    async with _client() as client:
        refused = await client.post("/api/demo/named", content=chunks(), headers=JSON)
    _assert_refused(refused, b"\\ud800")


async def test_other_errors_and_media_types_are_left_to_the_routes() -> None:
    async with _client() as client:
        broken = await client.post("/api/demo/named", content=b'{"name": ', headers=JSON)
        assert broken.status_code == 422
        assert [e["type"] for e in broken.json()["errors"]] == ["json_invalid"]
        text = await client.post(
            "/api/demo/raw", content=rb'"\ud800"', headers={"content-type": "text/plain"}
        )
        assert text.json() == {"bytes": 8}  # not JSON to FastAPI: the route decides


@pytest.mark.parametrize(
    ("body", "invalid"),
    [
        (b'{"a": "plain"}', False),
        (rb'{"a": "\u00e9\u4e2d"}', False),
        (rb'{"a": "\ud83d\ude00"}', False),
        ('{"a": "\u00e9"}'.encode(), False),
        ('{"a": "\u00e9"}'.encode("utf-16"), False),  # JSON may be UTF-16
        (rb'{"a": "\\uD800"}', False),
        (rb'{"a": "\uD800"}', True),
        ('{"a": "\ud800"}'.encode("utf-16", "surrogatepass"), True),
        (b'{"a": "\xed\xbf\xbf"}', True),
        (rb'{"a": "\ud800"', False),  # not JSON at all: the route's parser says so
    ],
)
def test_what_counts_as_invalid_unicode(body: bytes, invalid: bool) -> None:
    assert holds_invalid_unicode(body) is invalid


# Nesting deeper than json.loads can recurse, with an escaped surrogate so that it is parsed.
TOO_DEEP = b"[" * 100_000 + rb'"\ud800"' + b"]" * 100_000


def test_nesting_too_deep_to_parse_is_left_to_the_routes() -> None:
    assert holds_invalid_unicode(TOO_DEEP) is False
    assert holds_invalid_unicode(b"[" * 100_000) is False


async def test_nesting_too_deep_to_parse_is_no_500() -> None:
    async with _client() as client:
        parsed = await client.post("/api/demo/anything", content=TOO_DEEP, headers=JSON)
        raw = await client.post("/api/demo/raw", content=TOO_DEEP, headers=JSON)
    # FastAPI's own parser refuses it (a 4xx problem); a route reading the stream gets it.
    assert 400 <= parsed.status_code < 500, parsed.text
    assert parsed.headers["content-type"].startswith("application/problem+json")
    assert raw.json() == {"bytes": len(TOO_DEEP)}
