"""Password hashing parameters and opaque tokens."""

from __future__ import annotations

import os
import threading

import jwt
import pytest
from cryptography.exceptions import InvalidTag

from services.accounts import security
from services.accounts.config import AccountsSettings
from services.accounts.security import (
    HASHER,
    access_token,
    hash_password,
    new_secret,
    open_successor,
    seal_successor,
    secret_hash,
    verify_password,
)
from shared.auth import verify_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.cpus import usable_cpus


async def test_passwords_use_argon2id_at_the_owasp_minimum_and_verify() -> None:
    stored = await hash_password("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "correct horse" not in stored
    assert await verify_password(stored, "correct horse battery")
    assert not await verify_password(stored, "wrong horse battery")
    assert not await verify_password(None, "anything at all")  # unknown email: still False
    assert not await verify_password("not a hash", "anything")
    assert not HASHER.check_needs_rehash(stored)


def test_opaque_tokens_are_long_random_and_stored_as_hashes() -> None:
    a, b = new_secret(), new_secret()
    assert a != b
    assert len(a) >= 43
    assert secret_hash(a) != secret_hash(b)
    assert a.encode() not in secret_hash(a)


def test_access_tokens_last_five_minutes_and_under_13_means_do_not_track() -> None:
    # The lifetime the service is configured with by default: the promised five minutes.
    seconds = AccountsSettings(environment="test").accounts_access_token_seconds
    assert seconds == 300
    token = access_token(
        DEV_TOKEN_PRIVATE_KEY,
        subject="u",
        session_id="s",
        kind="user",
        seconds=seconds,
        age_band="under_13",
    )
    claims = verify_token(DEV_TOKEN_PUBLIC_KEY, token)
    assert claims.tracking_opt_out
    assert claims.exp - claims.iat == seconds
    raw = jwt.decode(token, options={"verify_signature": False})
    assert set(raw) >= {"sub", "sid", "kind", "aud", "iss", "exp", "nbf", "iat", "jti"}


async def test_hashing_runs_on_its_own_threads_one_per_usable_cpu() -> None:
    def where() -> str:
        return threading.current_thread().name

    assert (await security._off_loop(where)).startswith("argon2")
    assert security._hashing._max_workers == usable_cpus() == security.HASH_THREADS


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread nice here")
async def test_hashing_threads_yield_the_cpu_and_the_event_loop_keeps_its_priority() -> None:
    def nice_here() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert await security._off_loop(nice_here) == security.HASH_NICENESS == 19
    assert nice_here() < security.HASH_NICENESS


def test_a_successor_opens_only_with_the_token_it_was_sealed_with() -> None:
    token, successor = new_secret(), new_secret()
    sealed = seal_successor(token, successor)
    assert successor.encode() not in sealed
    assert open_successor(token, sealed) == successor
    with pytest.raises(InvalidTag):
        open_successor(new_secret(), sealed)
    assert seal_successor(token, successor) != sealed  # a fresh nonce each time
