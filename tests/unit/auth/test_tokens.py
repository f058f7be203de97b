import base64
import hashlib
import hmac
import json
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import InvalidToken, issue_token, verify_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(ttl: timedelta = timedelta(minutes=5), key: str = DEV_TOKEN_PRIVATE_KEY) -> str:
    return issue_token(key, subject="u1", session_id="s1", kind="user", ttl=ttl)


def test_a_fresh_token_verifies_with_its_claims() -> None:
    claims = verify_token(DEV_TOKEN_PUBLIC_KEY, _token())
    assert (claims.sub, claims.sid, claims.kind) == ("u1", "s1", "user")


def test_an_expired_token_is_refused() -> None:
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, _token(ttl=timedelta(seconds=-1)))


def test_alg_none_is_refused() -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    payload = _token().split(".")[1]
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, f"{header.decode()}.{payload}.")


def test_hmac_signed_with_the_public_key_is_refused() -> None:
    # The classic algorithm-confusion attack: HS256 keyed with the PEM the verifier holds,
    # over otherwise valid claims. Forged by hand, as PyJWT will not take a PEM as an
    # HMAC secret; a verifier that trusted the header's alg would accept it.
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _token().split(".")[1]
    signed = f"{header}.{payload}"
    mac = hmac.new(DEV_TOKEN_PUBLIC_KEY.encode(), signed.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, f"{signed}.{_b64url(mac)}")


def test_another_signers_token_and_the_wrong_audience_are_refused() -> None:
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, _token(key=other))
    wrong_audience = jwt.encode(
        {"sub": "u1", "sid": "s", "aud": "elsewhere", "iss": "imt-accounts", "exp": 2**40,
         "nbf": 0, "iat": 0},
        DEV_TOKEN_PRIVATE_KEY, algorithm="EdDSA",
    )  # fmt: skip
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, wrong_audience)
