"""The operators' pipeline on real PostgreSQL, with more open requests than it lists."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from services.deletion.bootstrap import dependencies
from services.deletion.context import Context
from services.deletion.routes import operators
from tests.integration.deletion.harness import harness_settings, running_harness

# Open requests older than any other, erased in time (so late against no bound), waiting
# for their backups: more than the pipeline lists of one kind.
OLD_AND_ON_TIME = """
INSERT INTO deletion_requests (request_id, subject_id, scope, initiated_by, stage,
    stage_entered_at, requested_at, grace_ends_at, erasing_started_at, erased_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'account', 'user', 'backups_pending', now(),
    now() - interval '100 days' + make_interval(secs => g), now(), now(), now()
FROM generate_series(1, $1) AS g
"""
ONE = """
INSERT INTO deletion_requests (request_id, subject_id, scope, initiated_by, stage,
    stage_entered_at, requested_at, grace_ends_at, reason)
VALUES ($1, gen_random_uuid(), 'account', 'user', $2, now(), now() - $3::interval, now(), $4)
"""


async def test_late_requests_and_escalations_past_the_oldest_open_ones_are_listed(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    async with running_harness(settings, with_worker=False) as harness:
        await harness.pool.execute(OLD_AND_ON_TIME, operators.PIPELINE_LIMIT)
        late, escalated = uuid.uuid4(), uuid.uuid4()
        await harness.pool.execute(ONE, late, "grace", timedelta(days=40), None)
        reason = "no answer in time from: analytics"
        await harness.pool.execute(ONE, escalated, "escalated", timedelta(minutes=1), reason)

        context = Context(settings, harness.runtime, dependencies(settings, harness.runtime))
        shown = await operators.pipeline(None, context)  # type: ignore[arg-type]

    assert shown["counts"] == {
        "backups_pending": operators.PIPELINE_LIMIT,
        "grace": 1,
        "escalated": 1,
    }
    assert [(o["request_id"], o["overdue"]) for o in shown["overdue"]] == [
        (str(late), {"gdpr": True, "ccpa": False})
    ]
    assert [(e["request_id"], e["reason"]) for e in shown["escalations"]] == [
        (str(escalated), reason)
    ]
