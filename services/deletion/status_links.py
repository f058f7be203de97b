"""Links that let a user follow their account's erasure without signing in (P-16).

Once the stores are told to erase, accounts deletes the user: the status page behind a
sign-in is out of reach for good, while the shredding, the backups and the certificate
are still to come. The final email carries a link instead. Its secret is minted once
per request and goes with every EraseSubject of it: the notifier mails the first one
it can process, and that may be a resend (the first dead-lettered, or an operator's
retry). The link shows the request's stages, dates and certificate to whoever holds
it, and nothing else of anyone: nothing the deletion database does not show anyway.
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


async def key_for(conn: Connection, request_id: UUID) -> str:
    """The secret of ``request_id``'s link: minted on first use, the same ever after."""
    key = secrets.token_urlsafe(KEY_BYTES)
    await conn.execute(
        "INSERT INTO status_links (request_id, key, key_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (request_id) DO NOTHING",
        request_id,
        key,
        key_hash(key),
    )
    kept: str = await conn.fetchval(
        "SELECT key FROM status_links WHERE request_id = $1", request_id
    )
    return kept


async def request_of(conn: Connection, key: str) -> UUID | None:
    """The request a link's secret was minted for, or None for any other string."""
    found: UUID | None = await conn.fetchval(
        "SELECT request_id FROM status_links WHERE key_hash = $1", key_hash(key)
    )
    return found
