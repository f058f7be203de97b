"""Links that let a user follow their account's erasure without signing in (P-16).

Once the stores are told to erase, accounts deletes the user: the status page behind a
sign-in is out of reach for good, while the shredding, the backups and the certificate
are still to come. The final email carries a link instead. Its secret is minted once,
with the first EraseSubject (the notifier mails the first command it gets and ignores
the resends), and only its SHA-256 is kept: the link shows the request's stages, dates
and certificate to whoever holds it, and nothing else of anyone.
"""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

from shared.db import Connection

#: Bytes of randomness in a link's secret (256 bits: not guessable, not worth trying).
KEY_BYTES = 32


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def mint(conn: Connection, request_id: UUID) -> str | None:
    """A new secret for ``request_id``'s link, or None if one was minted already (its
    plaintext went out with the first command; a resend carries none)."""
    key = secrets.token_urlsafe(KEY_BYTES)
    minted = await conn.fetchval(
        "INSERT INTO status_links (key_hash, request_id) VALUES ($1, $2)"
        " ON CONFLICT (request_id) DO NOTHING RETURNING true",
        key_hash(key),
        request_id,
    )
    return key if minted else None


async def request_of(conn: Connection, key: str) -> UUID | None:
    """The request a link's secret was minted for, or None for any other string."""
    found: UUID | None = await conn.fetchval(
        "SELECT request_id FROM status_links WHERE key_hash = $1", key_hash(key)
    )
    return found
