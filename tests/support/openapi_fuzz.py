"""Schemathesis over a service's whole OpenAPI document, through the gateway.

Every operation gets valid input (schemathesis's positive cases) and input its schema
refuses (negative cases, where the operation takes any). However bad the input, the
answer is no 5xx, and every 4xx is a problem body (RFC 9457, as
``shared.observability.problems`` writes them): content type application/problem+json,
a JSON object with ``type`` and ``title`` strings and the response's own ``status``,
which fits the ProblemDetails schema every document declares for errors
(``shared.service.problem_docs``). Every answer is also the one its document declares
(schemathesis's status code, content type and response schema checks): a typed answer
(``shared.service.answers``) its schema, each event of the inbox stream its own.
Each operation's failures are collected, so one run names every operation that failed.

Routes that read a body the document leaves open (a beacon sent as text/plain, a raw
email, a form) get no generated body from schemathesis: :func:`fuzz_raw` sends them
bodies of a strategy's making, with any content type.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Sequence
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import ValidationError
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation as AnyOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.observability.problems import PROBLEM_CONTENT_TYPE
from shared.service.problem_docs import ProblemDetails

# The same examples every run, so `make test` passes or fails on the code alone;
# IMT_FUZZ_RANDOM=1 explores new ones (how a path of %FF was found: see the gateway's
# access log).
FUZZ = settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=os.environ.get("IMT_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
)
# An event stream (the notifier's live inbox) never ends: read up to its first event.
CONFIG = SchemathesisConfig.from_dict({"max-stream-events": 1})

Operation = AnyOperation[Any, Any, Any, Any]
Route = tuple[str, str]  # (METHOD, path template as the document has it)


def operations(schema_url: str) -> list[Operation]:
    """Every operation of the OpenAPI document at ``schema_url``."""
    schema = schemathesis.openapi.from_url(schema_url, config=CONFIG)
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def route(operation: Operation) -> Route:
    return operation.method.upper(), operation.path


def problem_shape_error(response: Response | httpx.Response) -> str | None:
    """Why a 4xx answer is not a problem body, or None when it is one (or no 4xx)."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = _header(response, "content-type")
    if content_type.split(";")[0].strip().lower() != PROBLEM_CONTENT_TYPE:
        return f"content type {content_type!r}, not {PROBLEM_CONTENT_TYPE}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return "a body that is not JSON"
    if not isinstance(body, dict):
        return "a JSON body that is not an object"
    if not isinstance(body.get("type"), str) or not isinstance(body.get("title"), str):
        return f"no 'type' and 'title' strings (members: {sorted(body)})"
    if body.get("status") != response.status_code:
        return f"'status' {body.get('status')!r} in a {response.status_code} answer"
    try:
        ProblemDetails.model_validate(body)
    except ValidationError as exc:
        return f"a body the documents' ProblemDetails does not describe: {exc}"
    return None


def _header(response: Response | httpx.Response, name: str) -> str:
    if isinstance(response, httpx.Response):
        return str(response.headers.get(name, ""))
    return (response.headers.get(name) or [""])[0]


def _described(case: Case[Any], response: Response) -> str:
    body = case.body if isinstance(case.body, (dict, list, str, int, float)) else None
    return (
        f"{case.method.upper()} {case.formatted_path} query={case.query!r}"
        f" body={str(body)[:200]!r} -> {response.status_code}"
        f" {response.content[:300]!r}"
    )


def fuzz(
    operation: Operation,
    base_url: str,
    headers: dict[str, str],
    *,
    page: bool = False,
    negative: bool = True,
) -> None:
    """Call ``operation`` with generated input; fail on a 5xx, or on a 4xx that is not a
    problem body (unless ``page``: the route answers people's browsers with pages)."""

    def check(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=headers)
        assert response.status_code < 500, _described(case, response)
        if not page:
            wrong = problem_shape_error(response)
            assert wrong is None, f"{wrong}: {_described(case, response)}"
            # And the answer is the one the document declares: its status, its content
            # type and its schema (a typed answer, or the ProblemDetails of an error).
            case.validate_response(response, checks=DOCUMENTED)

    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negative else [])
    for mode in modes:

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Case[Any]) -> None:
            check(case)

        try:
            call()
        except Unsatisfiable:
            # Nothing of the operation's input can break its schema (no parameters, or a
            # body the document leaves open): its positive cases are all there is.
            assert mode is GenerationMode.NEGATIVE, route(operation)


def fuzz_all(
    schema_url: str,
    base_url: str,
    headers_for: Callable[[Route], dict[str, str]],
    *,
    excluded: Callable[[Route], bool] = lambda _route: False,
    pages: Collection[Route] = (),
    negative: bool = True,
) -> list[str]:
    """Fuzz every operation of the document but the ``excluded``, each with the headers
    ``headers_for`` gives it; the operations fuzzed (``METHOD path``). Fails once all
    were tried, naming each operation that answered badly and the input that did it."""
    tested: list[str] = []
    failures: list[str] = []
    for operation in operations(schema_url):
        where = route(operation)
        if excluded(where):
            continue
        try:
            fuzz(operation, base_url, headers_for(where), page=where in pages,
                 negative=negative)  # fmt: skip
        except Exception as exc:  # an assertion, or the group of several distinct ones
            failures.append(f"{' '.join(where)}: {exc!r}"[:2000])
        tested.append(" ".join(where))
    assert not failures, "\n".join(failures)
    return tested


DOCUMENTED = [status_code_conformance, content_type_conformance, response_schema_conformance]


# -- bodies the document leaves open ------------------------------------------------------

RawBody = tuple[str | None, bytes]  # (content type, or none sent; the body)
CONTENT_TYPES: tuple[str | None, ...] = (
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzz",
    "multipart/form-data",
    "message/rfc822",
    "application/octet-stream",
    None,
)
# Text JSON may carry though it is not Unicode (a lone surrogate), and control characters.
_ODD_TEXT = st.sampled_from(["\ud800", "\udfff", "\x00", "\x1f", "\u2028", "\ufeff", "%00"])
TEXT = st.one_of(st.text(max_size=40), _ODD_TEXT, st.builds("".join, st.lists(_ODD_TEXT)))
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(),
    TEXT,
)


def json_values(scalars: st.SearchStrategy[Any] = JSON_SCALARS) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
        ),
        max_leaves=12,
    )


def json_bytes(value: Any, ascii_only: bool) -> bytes:
    """``value`` as JSON (NaN and Infinity as Python writes them), its lone surrogates
    escaped (ASCII) or encoded as UTF-8 would, were it allowed to (not valid UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def json_documents(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(json_bytes, values, st.booleans())


def raw_bodies(
    documents: st.SearchStrategy[bytes], likely_types: Sequence[str] = ()
) -> st.SearchStrategy[RawBody]:
    """``documents``, or any bytes; each with any content type (or none), those of
    ``likely_types`` three times in four."""
    types = st.sampled_from(CONTENT_TYPES)
    if likely_types:
        likely = st.sampled_from(likely_types)
        types = st.one_of(likely, likely, likely, types)
    return st.tuples(
        types,
        st.one_of(documents, documents, st.binary(max_size=300), st.just(b"[" * 5000)),
    )


# (url, method, headers, bodies)
RawTarget = tuple[str, str, dict[str, str], st.SearchStrategy[RawBody]]


def fuzz_raw(
    url: str,
    method: str,
    headers: dict[str, str],
    bodies: st.SearchStrategy[RawBody],
    *,
    examples: int = 40,
) -> None:
    """Send ``method`` to ``url`` with each body; fail on a 5xx, or a 4xx that is not a
    problem body."""
    with httpx.Client(timeout=30) as client:

        @settings(FUZZ, max_examples=examples)
        @given(raw=bodies)
        def call(raw: RawBody) -> None:
            content_type, body = raw
            sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
            response = client.request(method, url, content=body, headers=sent)
            where = f"{method} {url} {content_type!r} {body[:300]!r} -> {response.status_code}"
            assert response.status_code < 500, f"{where} {response.content[:300]!r}"
            wrong = problem_shape_error(response)
            assert wrong is None, f"{wrong}: {where} {response.content[:300]!r}"

        call()


def fuzz_raw_all(targets: Sequence[RawTarget]) -> None:
    """:func:`fuzz_raw` each (url, method, headers, bodies); fails once all were tried."""
    failures = []
    for url, method, headers, bodies in targets:
        try:
            fuzz_raw(url, method, headers, bodies)
        except Exception as exc:
            failures.append(f"{method} {url}: {exc!r}"[:2000])
    assert not failures, "\n".join(failures)
