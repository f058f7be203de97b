"""What the OpenAPI documents say of errors: every one is a problem details body.

Each error answer of the platform is an RFC 9457 problem (``application/problem+json``:
:mod:`shared.observability.problems` writes the services' own, the gateway writes its
413, 429, 503 and 504 alike). FastAPI's generated document says otherwise: a 422 of its
own shape (``HTTPValidationError``, a ``detail`` list of ``loc``/``msg``/``input``) that
no route answers, and no other error at all. A client generated from it (the frontend
team's) would read validation errors where they are not, and type nothing else.

:func:`document_problems` rewrites the document: each operation's 422 (where FastAPI
declares one, a route that validates input), the errors a route describes itself and
the ``4XX`` and ``5XX`` ranges answer :class:`ProblemDetails`, and FastAPI's unused
schemas go.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.observability import PROBLEM_CONTENT_TYPE


class FieldError(BaseModel):
    """One invalid part of a request: where, why, and a machine-readable kind."""

    location: str = Field(
        description="Dotted path of the part: body.email, query.limit, header.Idempotency-Key."
    )
    message: str = Field(description="Why it is refused, for people; never quotes the value.")
    type: str = Field(description="The kind of error, for programs: missing, string_too_long...")


class ProblemDetails(BaseModel):
    """An error (RFC 9457). ``type`` tells errors apart: a URI under
    ``https://imt.example/problems/`` for the platform's own (``validation``,
    ``not-found``, ``link-used``...), ``about:blank`` where the status says it all."""

    # RFC 9457 section 3.2: a problem may carry members a client does not know yet.
    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="A URI naming the kind of problem; the platform's are listed in"
        " docs/api/problems.md."
    )
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(ge=400, le=599, description="The HTTP status code of the answer.")
    detail: str | None = Field(None, description="What went wrong with this request.")
    errors: list[FieldError] | None = Field(
        None, description="The invalid parts of the request, where a 422 names them."
    )
    trace_id: str | None = Field(
        None, description="The request's trace id: quote it to support to find its logs."
    )


_SCHEMAS = "#/components/schemas/"
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
_RANGES = {
    "4XX": "The request is refused; the problem's type says why (RFC 9457).",
    "5XX": "The service or the gateway failed, or the service is unavailable.",
}


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (FastAPI's, changed in place and returned) with its errors as they
    are answered: problem details."""
    content = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": f"{_SCHEMAS}ProblemDetails"}}}
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "HTTPValidationError" in str(responses.get("422")):  # FastAPI's
                responses["422"] = {
                    "description": "Some part of the request is missing or invalid: the"
                    " problem's errors name each.",
                    "content": content,
                }
            for code, response in responses.items():
                if code[0] in "45":  # a route's own description of an error it answers
                    response["content"] = content
            for codes, description in _RANGES.items():
                responses.setdefault(codes, {"description": description, "content": content})
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    problem = ProblemDetails.model_json_schema(ref_template=f"{_SCHEMAS}{{model}}")
    ours = {**problem.pop("$defs"), "ProblemDetails": problem}
    # A service's own model of the same name would be described as ours.
    taken = sorted(set(ours) & set(schemas))
    if taken:
        raise ValueError(f"schema names taken by the problem details: {taken}")
    schemas.update(ours)
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document
