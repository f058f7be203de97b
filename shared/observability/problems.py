"""RFC 9457 problem details: the one error format of every API.

Error bodies are a classic leak: validation errors echo the submitted input (passwords,
card numbers) and unhandled exceptions quote whatever they were raised with. Here the
client gets field locations, messages and titles; the exception stays in the (redacted)
logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.observability.metrics import route_template
from shared.pii import redact
from shared.tracing import trace_id_var

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://imt.example/problems/"


def problem_type(slug: str) -> str:
    """The type URI of a problem specific to the platform: ``https://imt.example/problems/<slug>``."""
    return f"{PROBLEM_TYPE_BASE}{slug}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An error answered with a problem details body; raise it from any endpoint.

    ``slug`` builds the type URI (``https://imt.example/problems/<slug>``); without a
    slug nor a ``type`` the type is ``about:blank`` and the title the HTTP reason phrase,
    as RFC 9457 asks.
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        slug: str | None = None,
        type: str | None = None,  # the RFC's name for the member
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.title = title or _phrase(status)
        self.detail = detail
        self.type = type or (problem_type(slug) if slug else "about:blank")
        self.errors = [dict(error) for error in errors] if errors is not None else None
        self.headers = dict(headers) if headers else None
        super().__init__(f"{status} {self.title}" + (f": {detail}" if detail else ""))

    def body(self) -> dict[str, Any]:
        """The JSON members of the problem."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if self.errors is not None:
            body["errors"] = self.errors
        # Lets support find the (redacted) log lines of a failed request.
        trace_id = trace_id_var.get()
        if trace_id is not None:
            body["trace_id"] = trace_id
        return body

    def response(self) -> JSONResponse:
        """The problem as a response with content type ``application/problem+json``."""
        return JSONResponse(
            self.body(),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_CONTENT_TYPE,
        )


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    """Where and why the request is invalid, without the values that were submitted.

    Pydantic errors carry ``input`` and ``ctx`` (which may quote the input); only the
    location, message and error type are kept. Messages of custom validators and dict
    keys in locations are written by or come from users, so they are redacted too.
    """
    errors: list[dict[str, str]] = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()))
        errors.append(
            {
                "location": redact(location),
                "message": redact(str(error.get("msg", ""))),
                "type": str(error.get("type", "")),
            }
        )
    return errors


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response()


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return Problem(
        422,
        "Invalid request",
        "Some fields of the request are missing or invalid.",
        slug="validation",
        errors=validation_errors(exc),
    ).response()


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # A string detail was written for the client; anything else may be internal state.
    detail = (
        exc.detail
        if isinstance(exc.detail, str) and exc.detail != _phrase(exc.status_code)
        else None
    )
    return Problem(exc.status_code, detail=detail, headers=exc.headers).response()


# Character data PostgreSQL refuses (a NUL, text the database encoding cannot hold).
_BAD_CHARACTERS = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


async def _on_unstorable(request: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL (or asyncpg, encoding a query argument) cannot take: text with
    a NUL, a date past the year 9999 in UTC, a number out of its column's range. What
    the client sent cannot be stored, so it is the client's 422, in every service alike,
    and the statement that failed wrote nothing (nor does its transaction, rolled back)."""
    assert isinstance(exc, asyncpg.DataError)
    # The exception's message quotes the offending value (asyncpg puts the query
    # argument's repr in it): logged by class and route only, like any input.
    log.warning(
        "unstorable value (%s) in %s %s",
        type(exc).__name__,
        request.scope.get("method", ""),
        route_template(request.scope),
    )
    if isinstance(exc, _BAD_CHARACTERS):
        title, detail = "Invalid characters", "Some text holds characters that cannot be stored."
    else:
        title, detail = "Invalid value", "Some values of the request cannot be stored."
    return Problem(422, title, detail, slug="validation").response()


def internal_error() -> Problem:
    """The only thing a client learns of an unexpected exception."""
    return Problem(500, detail="An unexpected error occurred.")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log_unexpected(request.scope, exc)
    return internal_error().response()


def _log_unexpected(scope: Scope, exc: BaseException) -> None:
    # The route template and method, not the raw path, which may carry personal data.
    log.error(
        "unhandled %s in %s %s",
        type(exc).__name__,
        scope.get("method", ""),
        route_template(scope),
        exc_info=exc,
    )


class _UnexpectedErrorMiddleware:
    """Turns exceptions no handler took into a 500 problem, once.

    Starlette's own handler for ``Exception`` answers and then re-raises, so the server
    logs the same error a second time and test clients raise it. This middleware sits
    inside that one and stops the exception when a response can still be sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise  # too late for a problem body; the server closes the connection
            _log_unexpected(scope, exc)
            await internal_error().response()(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem details body. Call before startup."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    # Starlette's class, which FastAPI's subclasses: the router raises it for 404 and 405.
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    # A value the database cannot store (text with a NUL): the request's fault, not ours.
    app.add_exception_handler(asyncpg.DataError, _on_unstorable)
    # Kept as a fallback for errors raised by middlewares outside the one below.
    app.add_exception_handler(Exception, _on_unexpected)
    answer_unexpected_errors(app)


def answer_unexpected_errors(app: FastAPI) -> None:
    """Add the middleware that answers an uncaught exception with a 500 problem, as the
    outermost so far: errors of the middlewares added before it are answered too."""
    app.add_middleware(_UnexpectedErrorMiddleware)
