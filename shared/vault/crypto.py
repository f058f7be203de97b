"""The vault's cryptography, pure: AES-256-GCM data keys wrapped by a master key.

Sealed values are ``version(1) | nonce(12) | ciphertext+tag``. The associated data binds
a sealed value to its subject and purpose (e.g. ``accounts.users.email``), so a value
copied to another user's row or column does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32


class SealBroken(ValueError):
    """A sealed value that does not open with this key, subject and purpose."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def wrap_key(master_key: bytes, subject: str, data_key: bytes) -> bytes:
    return _encrypt(master_key, data_key, _aad(subject, "vault.data_key"))


def unwrap_key(master_key: bytes, subject: str, wrapped: bytes) -> bytes:
    return _decrypt(master_key, wrapped, _aad(subject, "vault.data_key"))


def seal_with(data_key: bytes, subject: str, purpose: str, plaintext: str) -> bytes:
    return _encrypt(data_key, plaintext.encode(), _aad(subject, purpose))


def open_with(data_key: bytes, subject: str, purpose: str, sealed: bytes) -> str:
    return _decrypt(data_key, sealed, _aad(subject, purpose)).decode()


def index_form(value: str) -> str:
    """The value as the blind index sees it: two spellings of it match."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


def blind_index(index_key: bytes, purpose: str, value: str) -> bytes:
    """Keyed HMAC of a normalised value: equal inputs match, the value is not recoverable."""
    normalised = index_form(value)
    return hmac.new(index_key, f"{purpose}\x00{normalised}".encode(), hashlib.sha256).digest()


def _aad(subject: str, purpose: str) -> bytes:
    return f"{subject}\x00{purpose}".encode()


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != FORMAT_V1:
        raise SealBroken("not a sealed value of a known format")
    nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise SealBroken("sealed value does not open for this subject and purpose") from None
