"""Users written straight into a scratch accounts database."""

from __future__ import annotations

import uuid
from typing import Any

from services.accounts import store
from shared.db.pool import Connection


async def stored_user(conn: Connection, **columns: Any) -> uuid.UUID:
    """An active adult with placeholder sealed fields; ``columns`` replace or add any."""
    user_id = columns.pop("id", None) or uuid.uuid4()
    defaults: dict[str, Any] = {
        "email_index": user_id.bytes,
        "email": b"sealed-email",
        "name": b"sealed-name",
        "password_hash": "$argon2id$not-a-real-hash",
        "age_band": "adult",
        "active": True,
    }
    await store.insert_user(conn, id=user_id, **{**defaults, **columns})
    return user_id
