"""Access tokens: short-lived, signed by accounts (Ed25519), verified by every service.

Only ``EdDSA`` is accepted (no ``none``, no HMAC confusion), and ``aud``, ``iss``,
``exp``, ``nbf``, ``iat``, ``sub`` and ``sid`` are required (OWASP ASVS 9.1-9.2). Tokens
carry ids, roles and the facts other services need to honour a user's choices (age
band, tracking opt-out), never personal data.

A client sends the same access token with every request of its 5 minutes, so a token
whose signature verified is remembered (bounded, per process) and, when seen again,
only its time limits are checked again: a signature that was valid stays valid, while
``exp``/``nbf``/``iat`` are compared with the clock on every use. Revocation is not a
property of the token (accounts checks the session on every request).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
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
    expires_at: datetime | None = None,
) -> str:
    """A signed access token for ``ttl``, or until ``expires_at`` if that is sooner."""
    now = datetime.now(UTC)
    exp = now + ttl if expires_at is None else min(now + ttl, expires_at)
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
        "exp": exp,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, _private_key(private_key_pem), algorithm="EdDSA")


# Parsing a PEM costs as much as a signature: each configured key is parsed once.
@lru_cache(maxsize=8)
def _private_key(pem: str) -> Ed25519PrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the token signing key must be an Ed25519 private key")
    return key


@lru_cache(maxsize=8)
def _public_key(pem: str) -> Ed25519PublicKey:
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the token verification key must be an Ed25519 public key")
    return key


class _VerifiedTokens:
    """Tokens whose signature and claims verified: the claims and the time window in
    which they hold (``not_before`` <= now < ``expires``). Bounded: the oldest entry
    goes first. Only verified tokens enter, so a forger cannot fill it."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[tuple[str, str], tuple[Claims, float, float]] = {}
        self._lock = threading.Lock()  # verify_token may be called from worker threads

    def get(self, key: tuple[str, str], now: float) -> Claims | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        claims, not_before, expires = entry
        if not not_before <= now < expires:
            return None  # jwt.decode decides (and refuses) again, as for a new token
        return claims

    def put(self, key: tuple[str, str], claims: Claims, not_before: float) -> None:
        with self._lock:
            while len(self._entries) >= self._size:
                self._entries.pop(next(iter(self._entries)), None)
            self._entries[key] = (claims, not_before, float(claims.exp))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_verified = _VerifiedTokens(size=4096)
_clock = time.time  # PyJWT's clock too: seconds since the epoch
# How far the issuer's clock may run ahead of this process's: a token is taken this
# long before its nbf/iat. Without it, a fresh token from an accounts API a second
# ahead was refused by every other service. Expiry is exact (checked here).
CLOCK_SKEW_SECONDS = 5.0


def verify_token(public_key_pem: str, token: str) -> Claims:
    """Claims of a valid token, or :class:`InvalidToken` (never says which check failed)."""
    key = (public_key_pem, token)
    known = _verified.get(key, _clock())
    if known is not None:
        return known
    try:
        decoded = jwt.decode(
            token,
            _public_key(public_key_pem),
            algorithms=ALGORITHMS,
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "nbf", "iat", "aud", "iss", "sub", "sid"]},
        )
        claims = Claims.model_validate(decoded)
        # PyJWT's leeway stretches exp too: the token ends at exp exactly, here.
        if _clock() >= float(claims.exp):
            raise InvalidToken("invalid or expired token")
        # Refused before max(nbf, iat) less the skew, and from exp on; a cached one too.
        not_before = max(float(decoded["nbf"]), float(decoded["iat"])) - CLOCK_SKEW_SECONDS
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken("invalid or expired token") from exc
    _verified.put(key, claims, not_before)
    return claims
