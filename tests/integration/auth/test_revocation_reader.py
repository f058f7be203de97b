"""The revocation reader of every API but accounts, on the real sessions topic (P-08)."""

import asyncio
import time
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from fastapi import Request

from shared.auth import Claims
from shared.auth.revocation_reader import RevocationReader
from shared.bus import reliable_producer
from shared.config import PlatformSettings
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.accounts import SessionsRevoked
from shared.events.topics import ACCOUNTS_SESSIONS
from shared.observability import Problem

REQUEST = Request({"type": "http"})


async def _until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.1)


@pytest.mark.promise("P-08")
async def test_tokens_wait_until_the_reader_knows_every_revocation_then_ended_ones_fail(
    settings: PlatformSettings,
) -> None:
    user, session = uuid4(), uuid4()
    now = int(time.time())
    claims = Claims(sub=str(user), sid=str(session), kind="user", iat=now, exp=now + 300)
    reader = RevocationReader(settings)
    # Not started: it cannot tell an ended session's token from another, so none passes.
    with pytest.raises(Problem) as refused:
        await reader.session_check(REQUEST, claims)
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "2"}

    reader.start()
    try:
        await _until(reader.ready)
        assert await reader.session_check(REQUEST, claims) is True
        ended = SessionsRevoked(
            principal_id=user, session_ids=(session,), revoked_at=datetime.now(UTC), reason="logout"
        )
        producer = reliable_producer(settings)
        await producer.start()
        try:
            envelope = envelope_for(ended, source="tests", subject=str(user))
            await producer.send_and_wait(
                ACCOUNTS_SESSIONS.name, encode_envelope(envelope), key=str(user).encode()
            )
        finally:
            await producer.stop()

        async def refused_now() -> bool:
            return not await reader.session_check(REQUEST, claims)

        await _until(refused_now)
    finally:
        await reader.close()


@pytest.mark.promise("P-08")
async def test_a_reader_cut_off_from_kafka_refuses_tokens_until_it_is_current_again(
    settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off, it would not hear of a logout: tokens get 503 once it has not been
    current for ``stale_after``, and pass again once it is."""
    now = int(time.time())
    claims = Claims(sub=str(uuid4()), sid=str(uuid4()), kind="user", iat=now, exp=now + 300)
    # Healthy, it is at most ~3 s behind (a re-read every 2 s, polls of 1 s).
    reader = RevocationReader(settings, stale_after=6.0)
    reader.start()
    try:
        await _until(reader.ready)
        steady = time.monotonic() + 8  # longer than stale_after: healthy is never stale
        while time.monotonic() < steady:
            assert await reader.session_check(REQUEST, claims) is True
            await asyncio.sleep(0.2)

        async def unreachable(*_: object, **__: object) -> None:
            raise KafkaConnectionError("cut off by the test")

        with monkeypatch.context() as cut:
            cut.setattr(AIOKafkaConsumer, "end_offsets", unreachable)

            async def refused() -> bool:
                try:
                    await reader.session_check(REQUEST, claims)
                except Problem as problem:
                    why.append(problem)
                    return True
                return False

            why: list[Problem] = []
            await _until(refused)
            assert why[-1].status == 503
            assert why[-1].type.endswith("/sessions-not-current")
            assert not await reader.ready()  # no traffic for it meanwhile

        async def passes() -> bool:
            try:
                return await reader.session_check(REQUEST, claims)
            except Problem:
                return False

        await _until(passes)
    finally:
        await reader.close()
