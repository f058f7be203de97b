"""Access tokens: short-lived, signed by accounts (Ed25519), verified by every service.

Only ``EdDSA`` is accepted (no ``none``, no HMAC confusion), and ``aud``, ``iss``,
``exp``, ``nbf``, ``iat``, ``sub`` and ``sid`` are required (OWASP ASVS 9.1-9.2). Tokens
carry ids, roles and the facts other services need to honour a user's choices (age
band, tracking opt-out), never personal data.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from pydantic import BaseModel, ConfigDict

AUDIENCE = "imt-platform"
ISSUER = "imt-accounts"
ALGORITHMS = ["EdDSA"]
OperatorRole = Literal["support", "privacy_officer", "analyst", "admin"]


class InvalidToken(Exception):
    """A token that is missing, malformed, expired, for someone else, or revoked."""


class Claims(BaseModel):
    model_config = ConfigDict(frozen=True)

    sub: str
    sid: str
    kind: Literal["user", "operator"]
    roles: tuple[OperatorRole, ...] = ()
    age_band: str | None = None
    tracking_opt_out: bool = False
    exp: int
    iat: int


def issue_token(
    private_key_pem: str,
    *,
    subject: str,
    session_id: str,
    kind: Literal["user", "operator"],
    ttl: timedelta,
    roles: tuple[OperatorRole, ...] = (),
    age_band: str | None = None,
    tracking_opt_out: bool = False,
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": subject,
        "sid": session_id,
        "kind": kind,
        "roles": list(roles),
        "age_band": age_band,
        "tracking_opt_out": tracking_opt_out,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, private_key_pem, algorithm="EdDSA")


def verify_token(public_key_pem: str, token: str) -> Claims:
    """Claims of a valid token, or :class:`InvalidToken` (never says which check failed)."""
    try:
        decoded = jwt.decode(
            token,
            public_key_pem,
            algorithms=ALGORITHMS,
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "nbf", "iat", "aud", "iss", "sub", "sid"]},
        )
        return Claims.model_validate(decoded)
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidToken("invalid or expired token") from exc
