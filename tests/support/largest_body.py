"""The largest body a route takes, computed from its OpenAPI request schema.

Each field at its limits: every list at its ``maxItems`` of the largest item, every
string at its ``maxLength`` of the character JSON writes longest (an emoji outside the
Basic Multilingual Plane, as ``json.dumps`` escapes it: twelve bytes), every optional
field present, numbers at their bounds; written as Python's ``json.dumps`` writes it,
separators and all. A schema that sets no bound (a string without ``maxLength``, a list
without ``maxItems``) is :class:`Unbounded`: such a route's limit is the gateway's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# The character json.dumps writes longest: "\ud83d\ude00", twelve bytes.
WIDEST = "\U0001f600"
# Values of the string formats pydantic checks, at their longest.
FORMATS = {
    "uuid": "0b7e2f4a-3c1d-4e5f-8a9b-1c2d3e4f5a6b",
    "date-time": "2024-01-01T00:00:00.000000+00:00",
    "date": "2024-01-01",
}
# Integers without bounds: a 64-bit one's longest (PostgreSQL's bigint holds the rest).
LONGEST_INTEGER = -(2**63)


class Unbounded(ValueError):
    """A schema that sets no size limit: no largest body."""


def largest_bodies(document: dict[str, Any]) -> Iterator[tuple[str, str, int | None]]:
    """(method, path, the largest JSON body's size in bytes or None when unbounded) of
    every operation of an OpenAPI ``document`` that takes a JSON body."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            try:
                body = largest_value(document, media["schema"])
            except Unbounded:
                yield method.upper(), path, None
                continue
            yield method.upper(), path, len(json.dumps(body).encode())


def largest_value(document: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value of ``schema`` whose JSON is the longest it allows."""
    if depth > 30:
        raise Unbounded("a schema that contains itself")
    schema = _resolved(document, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [largest_value(document, option, depth + 1) for option in schema[key]]
            return max(options, key=lambda value: len(json.dumps(value)))
    if "allOf" in schema:
        [only] = schema["allOf"]
        return largest_value(document, only, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return max(schema["enum"], key=lambda value: len(json.dumps(value)))
    return _largest_of_type(document, schema, depth)


def _largest_of_type(document: dict[str, Any], schema: dict[str, Any], depth: int) -> Any:
    kind = schema.get("type")
    if kind == "object":
        if schema.get("additionalProperties") not in (None, False):
            raise Unbounded("an object with any keys")
        properties = schema.get("properties", {})
        return {name: largest_value(document, sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        if "maxItems" not in schema:
            raise Unbounded("a list without maxItems")
        return [largest_value(document, schema["items"], depth + 1)] * schema["maxItems"]
    if kind == "string":
        return _largest_string(schema)
    if kind == "integer":
        bounds = [schema.get("minimum", LONGEST_INTEGER), schema.get("maximum", LONGEST_INTEGER)]
        return max(bounds, key=lambda bound: len(str(bound)))
    if kind == "number":
        return -1.7976931348623157e308
    if kind in ("boolean", "null"):
        return False if kind == "boolean" else None
    raise Unbounded(f"a schema of no known type: {schema}")


def _largest_string(schema: dict[str, Any]) -> str:
    if schema.get("format") in FORMATS:
        return FORMATS[schema["format"]]
    if "maxLength" not in schema:
        raise Unbounded("a string without maxLength")
    return WIDEST * int(schema["maxLength"])


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    return schema
