"""One id that follows a piece of work from the gateway through every service it reaches.

The gateway names each request with 32 random hex digits of its own, sent upstream as
``X-Request-Id`` (a client's own id stays in its access log, next to it). A service API
takes that id as the trace id of the request's work (:func:`trace_id_for_request`); the
events the work queues carry it as their W3C ``traceparent`` (:func:`current_traceparent`);
a consumer handling such an event takes it back (:func:`traced`), and the events that
handler queues carry it on.
Log lines and problem bodies show it as ``trace_id``, so an operator or an auditor can
follow a deletion request from the click to the last store's receipt with one search.

Only a W3C trace id (32 lowercase hex digits, not all zero) travels in events. Since the
gateway always sends its own, what a client wrote never travels; a direct caller's id
that is not one, or a UUID that looks like personal data, is replaced by a fresh id.
Visits are never traced (the collector writes them without a ``traceparent``): an
anonymous count must not be joinable to a request.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TypeVar

from shared.pii import PiiKind, redact

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
"""Trace id of the work in progress; set by whoever starts a request or handles an event."""

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NULL_TRACE = "0" * 32
# A trace id is 32 hex digits, which the token detector would take for a secret.
_PERSONAL_KINDS = frozenset(kind for kind in PiiKind if kind is not PiiKind.TOKEN)


class Traceable(Protocol):
    """What :func:`traced` needs of an item: its envelope's ``traceparent``, if any."""

    @property
    def traceparent(self) -> str | None: ...


T = TypeVar("T", bound=Traceable)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def is_trace_id(value: str) -> bool:
    return _TRACE_ID.fullmatch(value) is not None and value != _NULL_TRACE


def trace_id_for_request(request_id: str | None) -> str:
    """The trace id of a request's work: its request id when that is a W3C trace id (as
    the gateway's own always is), or a UUID's spelling of one that holds no personal data
    (a caller reaching the API directly); else a new one."""
    if not request_id:
        return new_trace_id()
    if is_trace_id(request_id):
        # The gateway's random digits may happen to pass for a card number: not checked,
        # else its access log and the service's trace would disagree now and then.
        return request_id
    candidate = request_id.replace("-", "").lower()
    if is_trace_id(candidate) and redact(candidate, _PERSONAL_KINDS) == candidate:
        return candidate
    return new_trace_id()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id in a ``traceparent`` value (version 00), or None if it has none."""
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None or not is_trace_id(match.group(1)) or match.group(2) == "0" * 16:
        return None
    return match.group(1)


def traceparent_of(trace_id: str | None) -> str | None:
    """A ``traceparent`` for an event of the work traced as ``trace_id`` (a new span id
    each time), or None for untraced work."""
    if trace_id is None or not is_trace_id(trace_id):
        return None
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def current_traceparent() -> str | None:
    """A ``traceparent`` for an event queued by the work in progress."""
    return traceparent_of(trace_id_var.get())


@contextmanager
def working_on(trace_id: str | None) -> Iterator[None]:
    """Run a block as the work traced as ``trace_id`` (None: no one's); the trace id in
    force before is back afterwards."""
    token = trace_id_var.set(trace_id)
    try:
        yield
    finally:
        trace_id_var.reset(token)


def traced(items: Iterable[T]) -> Iterator[T]:
    """``items`` one by one, each handled under its own trace id (None for an untraced
    one), so the events its handler queues carry it on. The trace id in force before is
    back once the loop ends; if it ends early, whoever started the work restores it."""
    before = trace_id_var.get()
    for item in items:
        trace_id_var.set(trace_id_of(item.traceparent))
        yield item
    trace_id_var.set(before)
