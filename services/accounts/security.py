"""Passwords (argon2id, off the event loop), opaque one-time tokens, token issuing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import cache
from typing import Literal, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.accounts.hashing_load import HashingLoad
from shared.auth import OperatorRole, issue_token
from shared.cpus import usable_cpus

# OWASP minimum for argon2id: m=19 MiB, t=2, p=1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
MIN_PASSWORD = 8
MAX_PASSWORD = 128

# Hashing has threads of its own, one per CPU the process may use (a pod's CPU limit
# counts, see shared/cpus.py). More would not hash faster: each hash is CPU-bound and
# works through 19 MiB, so extra threads only evict each other's memory from the caches
# (2 cores: 10-15% more verifies/s on 2 threads than on 8). A storm then of logins waits
# its turn here instead of taking every core from the event loop, the database and the
# gateway.
HASH_THREADS = usable_cpus()

# Hashing threads run at the lowest CPU priority. A hash is ~20 ms of CPU that a login
# waits for anyway (and logins are throttled); the requests, the database and the
# gateway sharing the cores answer in a millisecond and should not queue behind it.
# On 2 cores, a storm of logins took the p99 of GET /me from ~50 ms to ~12 ms this way
# at the same logins/s. The price: while other work keeps every core busy, logins wait
# for it. Linux keeps a nice value per thread, and raising one needs no privilege.
HASH_NICENESS = 19


def _lower_priority() -> None:
    # Without per-thread nice values (not Linux), the threads run as they are.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


_hashing = ThreadPoolExecutor(
    HASH_THREADS, thread_name_prefix="argon2", initializer=_lower_priority
)
# What waits for those threads, and for how long (hashing_load.py, on /metrics).
HASHING_LOAD = HashingLoad()
T = TypeVar("T")


async def _off_loop(work: Callable[..., T], *args: str) -> T:
    ticket = HASHING_LOAD.submit()

    def timed() -> T:
        HASHING_LOAD.start(ticket)
        try:
            return work(*args)
        finally:
            HASHING_LOAD.finish(ticket)

    try:
        return await asyncio.get_running_loop().run_in_executor(_hashing, timed)
    finally:
        HASHING_LOAD.withdraw(ticket)  # a no-op once started; not started if cancelled


@cache
def _dummy_hash() -> str:
    # Verified against when the email is unknown, so both answers take the same time.
    return HASHER.hash(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    return await _off_loop(HASHER.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_unknown(password: str) -> bool:
    # In the hashing thread: the first call hashes the dummy, which must not block the loop.
    return _verify(_dummy_hash(), password)


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; with no hash, spend the same time and fail."""
    if stored is None:
        await _off_loop(_verify_unknown, password)
        return False
    return await _off_loop(_verify, stored, password)


def new_secret() -> str:
    """An opaque token for links and refresh tokens (256 bits)."""
    return secrets.token_urlsafe(32)


def secret_hash(token: str) -> bytes:
    """What is stored of an opaque token: a hash, so a database leak yields no token."""
    return hashlib.sha256(token.encode()).digest()


def _successor_key(token: str) -> AESGCM:
    # HKDF over a 256-bit random token: only its holder can derive the key.
    key = HKDF(hashes.SHA256(), 32, salt=None, info=b"imt refresh successor").derive(token.encode())
    return AESGCM(key)


def seal_successor(token: str, successor: str) -> bytes:
    """``successor`` sealed so that only the holder of ``token`` can open it."""
    nonce = os.urandom(12)
    return nonce + _successor_key(token).encrypt(nonce, successor.encode(), secret_hash(token))


def open_successor(token: str, sealed: bytes) -> str:
    """What :func:`seal_successor` sealed with ``token`` (InvalidTag for another token)."""
    return _successor_key(token).decrypt(sealed[:12], sealed[12:], secret_hash(token)).decode()


def access_token(
    private_key: str,
    *,
    subject: str,
    session_id: str,
    kind: Literal["user", "operator"],
    seconds: int,
    roles: tuple[OperatorRole, ...] = (),
    age_band: str | None = None,
    tracking_opt_out: bool = False,
    expires_at: datetime | None = None,
) -> str:
    return issue_token(
        private_key,
        subject=subject,
        session_id=session_id,
        kind=kind,
        ttl=timedelta(seconds=seconds),
        roles=roles,
        age_band=age_band,
        # Under-13 users are treated as Do Not Track everywhere (P-26).
        tracking_opt_out=tracking_opt_out or age_band == "under_13",
        expires_at=expires_at,
    )
