"""Fixtures that configure logging into a buffer and put the process' logging back after."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.types import ASGIApp

from shared.observability.logs import THIRD_PARTY_LOGGERS, configure_logging

LogLines = Callable[[], list[dict[str, object]]]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; other tests must not inherit it."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.propagate, lg.level)
        for name in THIRD_PARTY_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    yield
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.setLevel(level)


@pytest.fixture
def log_stream(restore_logging: None) -> io.StringIO:
    stream = io.StringIO()
    configure_logging("accounts", "DEBUG", stream=stream)
    return stream


@pytest.fixture
def log_lines(log_stream: io.StringIO) -> LogLines:
    """The JSON objects written so far, each line parsed (a line that is not JSON fails)."""

    def read() -> list[dict[str, object]]:
        return [json.loads(line) for line in log_stream.getvalue().splitlines()]

    return read


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    """An in-process client for ``app``.

    httpx's ASGI transport rather than ``fastapi.testclient``: Starlette's TestClient now
    warns that it wants httpx2, and the suite turns warnings into errors. App exceptions
    are re-raised, so a test sees any error that escapes the problem handlers.
    """
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
