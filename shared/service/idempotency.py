"""The Idempotency-Key request header (IETF httpapi draft "The Idempotency-Key HTTP
Header Field"): a POST sent again with the same key (a double click, a retry after an
answer lost on the way) is answered as the first was, and does nothing twice.

A route that takes it claims the key in the transaction of its effect and records its
answer there (:func:`claim`, :func:`answered`), so the key and the effect commit or
roll back together: an answer that failed leaves the key free for a retry. Two sends of
one key at once: the second's insert waits on the first's unique row, then replays its
answer (or claims the key if the first rolled back). A key sent again with another
request (another route or body) is refused, ``422 idempotency-key-reused``.

Keys are per principal (the operator or user who sent them), kept as sent for
:data:`KEPT_HOURS`, so a key holding a card number is refused before the route runs
(``422 card-number``, P-09). Only a hash of the request is kept, and an answer that
holds ids only: an operator's route records its whole answer (ids), a user's route the
id of what it made, and answers a replay with that thing as it stands now
(:meth:`Replayed.response` with the content), so no personal data is copied out of the
vault's reach. The table is the service's own (``idempotency_keys``: see its
migration); a user's keys go with their account's erasure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared.db import Connection
from shared.observability import Problem
from shared.pii import find_card_numbers

KEPT_HOURS = 24  # and in EXPIRED
# Printable ASCII without spaces (a UUID, a ULID, a random string): it is echoed in no
# log, but it is a header value and a database key.
KEY_PATTERN = r"^[!-~]{8,128}$"
REPLAYED_HEADER = "Idempotent-Replayed"


def _key_without_card_number(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=KEY_PATTERN,
            description=(
                "Optional; a fresh random value per action (8-128 printable characters)."
                " Sent again with the same request, the first answer is replayed (header"
                f" `{REPLAYED_HEADER}: true`) and nothing is done twice; kept"
                f" {KEPT_HOURS} hours. Another request with a used key: 422"
                " idempotency-key-reused; a key holding a card number: 422 card-number."
            ),
        ),
    ] = None,
) -> str | None:
    # Stored as sent for a day. A random key practically never holds a card number, so
    # refusing one costs a client a retry with a new key; keeping it stores card data.
    if key is not None and find_card_numbers(key):
        raise Problem(
            422,
            "Card numbers are not accepted",
            "We never store payment card numbers. Send a fresh random Idempotency-Key.",
            slug="card-number",
            errors=[
                {
                    "location": "header.Idempotency-Key",
                    "message": "holds a payment card number",
                    "type": "card_number",
                }
            ],
        )
    return key


# The header, refused before the route runs when it holds a card number. A route takes
# it as ``idempotency_key: IdempotencyKey`` (no default: the dependency has it).
IdempotencyKey = Annotated[str | None, Depends(_key_without_card_number)]

_CLAIM = """
INSERT INTO idempotency_keys (principal, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (principal, key) DO NOTHING
RETURNING 1
"""
_STORED = """
SELECT fingerprint, status, answer FROM idempotency_keys WHERE principal = $1 AND key = $2
"""
EXPIRED = "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"


@dataclass(frozen=True)
class Replayed:
    """The first request's recorded answer: answer it again (:meth:`response`)."""

    status: int
    answer: Any

    def response(self, content: Any = None) -> JSONResponse:
        """The recorded answer, or ``content`` (JSON-ready) in its place: what a route
        that recorded an id answers of that thing now."""
        body = self.answer if content is None else content
        return JSONResponse(body, self.status, headers={REPLAYED_HEADER: "true"})


@dataclass(frozen=True)
class Claimed:
    """A key this request holds: record its answer with :func:`answered`."""

    principal: UUID
    key: str


def fingerprint(route: str, body: BaseModel | None) -> bytes:
    """What a key is bound to: the route (path parameters filled in) and the body."""
    payload = body.model_dump(mode="json") if body is not None else None
    text = json.dumps([route, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


async def claim(
    conn: Connection, principal: UUID, key: str | None, route: str, body: BaseModel | None
) -> Claimed | Replayed | None:
    """In the effect's transaction: None without a key, :class:`Claimed` for a key not
    seen, or the first answer (:class:`Replayed`). Raises a 422 problem for a key reused with
    another request, a 409 one for a key whose first request failed without rolling back
    (never expected: the answer is recorded in the same transaction)."""
    if key is None:
        return None
    mark = fingerprint(route, body)
    if await conn.fetchval(_CLAIM, principal, key, mark) is not None:
        return Claimed(principal, key)
    stored = await conn.fetchrow(_STORED, principal, key)
    if stored is None:  # expired between the two statements: the effect was long ago
        raise _reused()
    if bytes(stored["fingerprint"]) != mark:
        raise _reused()
    if stored["status"] is None:
        raise Problem(
            409,
            "Request in progress",
            "A request with this Idempotency-Key did not finish; send it with a new key.",
            slug="idempotency-key-in-progress",
        )
    return Replayed(stored["status"], stored["answer"])


async def answered(conn: Connection, claimed: Claimed | None, status: int, answer: Any) -> None:
    """Record the answer of a claimed key (a pydantic model, or JSON-ready data)."""
    if claimed is None:
        return
    data = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
    await conn.execute(
        "UPDATE idempotency_keys SET status = $3, answer = $4 WHERE principal = $1 AND key = $2",
        claimed.principal,
        claimed.key,
        status,
        data,  # jsonb: the pool's codec encodes it
    )


def _reused() -> Problem:
    return Problem(
        422,
        "Idempotency-Key reused",
        "This Idempotency-Key was sent with another request: use a new key for each action.",
        slug="idempotency-key-reused",
    )
