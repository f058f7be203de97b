"""Request JSON must be text: strings that are not Unicode scalar values are refused.

JSON can spell a lone UTF-16 surrogate (``"\\ud800"``), and Python's decoder turns it
into a ``str`` that cannot be encoded back to UTF-8 (nor can UTF-8 bytes of a surrogate,
which ``json.loads`` lets through with ``surrogatepass``). Such a string passes every
model, then fails wherever text becomes bytes: password hashing, keyed hashes, the
vault's seal, Kafka. That failure is a 500 after part of the work may be done. Refused
here, before any route reads the body, it is a 422 like any other invalid input, in
every service at once.
"""

from __future__ import annotations

import json
import re
from email.message import Message as MimeType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.observability import Problem

# A \u escape of D800-DFFF: the only way plain-ASCII JSON spells a surrogate. A hit is
# only a reason to look closer (an escaped backslash before "ud800" is no escape).
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidUnicode(HTTPException):
    """Raised while the body is received. Starlette's class on purpose: FastAPI re-raises
    it from its body parsing (any other exception there becomes a 400), so the handler
    below answers it, for routes that parse JSON and routes that read the stream alike."""

    def __init__(self) -> None:
        super().__init__(422, "The request holds text that is not valid Unicode.")


def _is_json(content_type: str) -> bool:
    # The media types FastAPI parses as JSON; others are left to the routes that take them.
    mime = MimeType()
    mime["content-type"] = content_type
    subtype = mime.get_content_subtype()
    return mime.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _may_hold_surrogates(body: bytes) -> bool:
    """False when ``body`` surely decodes without surrogates (the common case, in one scan)."""
    if _ESCAPED_SURROGATE.search(body):
        return True
    if body.isascii():
        return False
    try:
        body.decode("utf-8")  # strict: refuses encoded surrogates, unlike json.loads
    except UnicodeDecodeError:
        return True  # or UTF-16/32, which json.loads also reads: parsed to be sure
    return False


def holds_invalid_unicode(body: bytes) -> bool:
    """Does ``body``, parsed as JSON the way the routes parse it, hold a string (key or
    value) with a surrogate code point? Invalid JSON is not judged here: the route's own
    parsing reports it."""
    if not _may_hold_surrogates(body):
        return False
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser's stack (1000 "[" and a lone
        # surrogate escape, say). The route's own parsing refuses such a body too.
        return False
    # Iterative: nesting as deep as the parser accepts must not exhaust the stack here.
    pending: list[Any] = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


class UnicodeJsonMiddleware:
    """Checks a JSON request body as it arrives, without holding it back.

    Each chunk is passed on when it arrives (a route that bounds its body still sees
    it grow); a copy is kept, checked once the last chunk is in, and the last chunk is
    refused instead of delivered when the body holds invalid text. Pure ASGI rather
    than ``BaseHTTPMiddleware``, which buffers streaming responses.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = next(
            (
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"content-type"
            ),
            "",
        )
        if not _is_json(content_type):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    if holds_invalid_unicode(body):
                        raise InvalidUnicode
            return message

        await self.app(scope, checked_receive, send)


async def _on_invalid_unicode(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidUnicode)
    # The validation problem every invalid body gets, naming no value (it is the input).
    return Problem(
        422,
        "Invalid request",
        "Some fields of the request are missing or invalid.",
        slug="validation",
        errors=[
            {
                "location": "body",
                "message": "holds text that is not valid Unicode (a lone surrogate)",
                "type": "unicode_invalid",
            }
        ],
    ).response()


def refuse_invalid_unicode(app: FastAPI) -> None:
    """Answer 422 to any JSON body of ``app`` holding a string that is not valid Unicode."""
    app.add_exception_handler(InvalidUnicode, _on_invalid_unicode)
    app.add_middleware(UnicodeJsonMiddleware)
