"""Models of answers a route builds as plain JSON, so that its OpenAPI document types
them (the frontend team generates clients from it) without changing a byte on the wire.

A route declares one as its ``response_model`` and goes on returning its dict. A key
the model does not name fails the route (a 500, which the tests see) instead of being
dropped unseen, so the document and the answers cannot drift apart silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema


def _written(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


#: A time as the routes write it: ``datetime.isoformat()`` (RFC 3339 with an offset), or
#: a datetime written so. Not pydantic's own datetime, which writes UTC as ``Z``: the
#: answers would change.
Timestamp = Annotated[
    datetime | str,
    PlainSerializer(_written, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Answer(BaseModel):
    """The base of such models: every key named, no other allowed."""

    model_config = ConfigDict(extra="forbid")
