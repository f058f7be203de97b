"""Request ids for tests that follow a request through the gateway's access log."""

from __future__ import annotations

import uuid

_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def kept_request_id(prefix: str) -> str:
    """A fresh X-Request-Id the gateway keeps: a hex id whose digits are letters. A
    random hex id holds 13 digits in a row now and then, which may be a card number:
    the gateway replaces it by its own (deploy.local.gateway.CARD_LIKE_ID)."""
    return f"{prefix}-{uuid.uuid4().hex.translate(_LETTERS)}"
