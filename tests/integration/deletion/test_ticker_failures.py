"""One request whose step keeps failing stops no other, on real Kafka and PostgreSQL.

The failure is a real database error inside the step (a test trigger refuses the stage
history rows of one subject's request), so the ticker's transaction sees what a bug or
bad stored data would cause: an aborted statement in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.deletion.config import DeletionSettings
from shared.config import PlatformSettings
from tests.integration.deletion.harness import (
    Harness,
    harness_settings,
    running_harness,
    scratch_topics,
)

# TEST ONLY, in the scratch deletion database: the doomed subjects' requests cannot
# leave `requested` (their history rows past it are refused) until the row goes.
DOOM = """
CREATE TABLE test_doomed (subject_id uuid PRIMARY KEY);
CREATE FUNCTION test_doom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.stage <> 'requested' AND EXISTS (
        SELECT 1 FROM deletion_requests r JOIN test_doomed d USING (subject_id)
        WHERE r.request_id = NEW.request_id
    ) THEN
        RAISE EXCEPTION 'injected failure';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_doom BEFORE INSERT ON stage_history
    FOR EACH ROW EXECUTE FUNCTION test_doom();
"""


@pytest.fixture
async def suffix(settings: PlatformSettings) -> AsyncIterator[str]:
    async with scratch_topics(DeletionSettings(environment="test")) as name:
        yield name


async def _failures(harness: Harness, request_id: uuid.UUID, at_least: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        failures = await harness.pool.fetchval(
            "SELECT step_failures FROM deletion_requests WHERE request_id = $1", request_id
        )
        if (failures or 0) >= at_least or time.monotonic() > deadline:
            return int(failures or 0)
        await asyncio.sleep(0.1)


async def test_a_request_whose_step_fails_is_put_back_and_the_others_go_on(
    scratch_dsn: str, suffix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="services.deletion.worker")
    # A short back-off cap, so the doomed request is tried again soon once it can pass.
    settings = harness_settings(
        scratch_dsn, suffix, tmp_path, deletion_retry_seconds=0.2, deletion_retry_max_seconds=1
    )
    async with running_harness(settings) as harness:
        await harness.pool.execute(DOOM)
        doomed_subject = uuid.uuid4()
        await harness.pool.execute("INSERT INTO test_doomed VALUES ($1)", doomed_subject)
        doomed, _ = await harness.request_deletion(doomed_subject)
        assert await _failures(harness, doomed, at_least=1) >= 1

        # Others arrive while it keeps failing, first in line by its due date each time.
        others = [(await harness.request_deletion())[0] for _ in range(3)]
        done = await harness.wait_for(others, "complete")
        assert set(done.values()) == {"complete"}, done
        assert await _failures(harness, doomed, at_least=2) >= 2
        assert await harness.stage(doomed) == "requested"
        assert await harness.history(doomed) == ["requested"]  # each failed step undone

        logged = [r.getMessage() for r in caplog.records if "ticker: request" in r.getMessage()]
        assert logged
        assert all(str(doomed) in m and "RaiseError" in m for m in logged)
        assert not [m for m in logged if str(doomed_subject) in m or "injected" in m]

        # The cause goes: the request goes on by itself, its failures forgotten.
        await harness.pool.execute("DELETE FROM test_doomed")
        assert (await harness.wait_for([doomed], "complete"))[doomed] == "complete"
        assert (
            await harness.pool.fetchval(
                "SELECT step_failures FROM deletion_requests WHERE request_id = $1", doomed
            )
            == 0
        )
