"""Legal holds hold the subject, on real Kafka and PostgreSQL with stand-in stores.

A hold placed through one request outlives it: the user cancels and asks again, or
deletes a device, and nothing is erased until an operator releases the hold.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.deletion import handlers, legal_holds
from services.deletion.bootstrap import dependencies
from services.deletion.context import Context
from services.deletion.domain.stages import StageConflict
from services.deletion.routes import operators
from services.deletion.worker import Ticker
from shared.events.catalogue.accounts import DeletionCancelled, DeletionRequested
from tests.integration.deletion.harness import (
    Harness,
    harness_settings,
    running_harness,
    send,
    short_financial_rules,
)


async def _end_grace_now(harness: Harness, *request_ids: uuid.UUID) -> None:
    await harness.pool.execute(
        "UPDATE deletion_requests SET grace_ends_at = now() - interval '1 second',"
        " next_check_at = now() WHERE request_id = ANY($1::uuid[])",
        list(request_ids),
    )


async def test_a_hold_stays_with_the_subject_when_its_request_is_cancelled(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    # A long grace, ended by hand: the hold is placed while the first request is in grace.
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    async with running_harness(settings) as harness:
        deps = dependencies(settings, harness.runtime)
        first, subject = await harness.request_deletion()
        assert (await harness.wait_for([first], "grace"))[first] == "grace"
        operator = uuid.uuid4()
        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.place_hold(conn, deps, first, "litigation hold 9", operator)
        cancel = DeletionCancelled(user_id=subject, request_id=first)
        await send(harness.producer, settings, cancel, subject)
        assert (await harness.wait_for([first], "cancelled"))[first] == "cancelled"

        # The user asks again, and deletes a device: both wait, with the hold's code (its
        # words stay in legal_holds).
        again, _ = await harness.request_deletion(subject)
        device, _ = await harness.request_deletion(subject, scope="device", item_id=uuid.uuid4())
        assert set((await harness.wait_for([again, device], "paused")).values()) == {"paused"}
        rows = await harness.pool.fetch(
            "SELECT reason, paused_from FROM deletion_requests WHERE request_id = ANY($1)",
            [again, device],
        )
        assert [(r["reason"], r["paused_from"]) for r in rows] == [("legal_hold", "requested")] * 2
        assert await harness.history(again) == ["requested", "paused"]

        # Past any grace period, and looked at by the ticker: still nothing is erased.
        await _end_grace_now(harness, again, device)
        await asyncio.sleep(2)
        assert {await harness.stage(again), await harness.stage(device)} == {"paused"}
        assert harness.stores.seen == []  # no store was ever told to erase

        # Released through the cancelled request it was placed through: both resume.
        async with harness.pool.acquire() as conn, conn.transaction():
            shown = await handlers.lift_hold(conn, deps, first, operator)
        assert shown.request.stage == "cancelled"
        done = await harness.wait_for([again, device], "complete")
        assert set(done.values()) == {"complete"}
        holds = await harness.pool.fetch(
            "SELECT subject_id, reason, placed_by, released_by, released_at FROM legal_holds"
        )
        assert [
            (h["subject_id"], h["reason"], h["placed_by"], h["released_by"]) for h in holds
        ] == [(subject, "litigation hold 9", operator, operator)]
        assert holds[0]["released_at"] is not None
        # Nothing left to release.
        with pytest.raises(StageConflict):
            async with harness.pool.acquire() as conn, conn.transaction():
                await handlers.lift_hold(conn, deps, again, operator)


async def test_a_request_that_missed_the_hold_pauses_before_erasing(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    async with running_harness(settings) as harness:
        deps = dependencies(settings, harness.runtime)
        request_id, subject = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "grace"))[request_id] == "grace"
        # As if placed while the request was on its way (committed after the request
        # looked, or through another of the subject's requests): the request never saw it.
        operator = uuid.uuid4()
        async with harness.pool.acquire() as conn:
            await legal_holds.place(
                conn, subject, "regulator inquiry", operator, datetime.now(UTC), request_id
            )
        await _end_grace_now(harness, request_id)

        assert (await harness.wait_for([request_id], "paused"))[request_id] == "paused"
        row = await harness.pool.fetchrow(
            "SELECT reason, paused_from FROM deletion_requests WHERE request_id = $1", request_id
        )
        assert row is not None
        assert (row["reason"], row["paused_from"]) == ("legal_hold", "holds")
        assert harness.stores.seen == []
        assert await harness.history(request_id) == ["requested", "grace", "holds", "paused"]

        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.lift_hold(conn, deps, request_id, operator)
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"


async def test_a_hold_placed_after_the_erasure_keeps_the_records_kept_for_a_period(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """A claim comes up after the account was erased: a hold placed through the finished
    request leaves it finished, and its kept records' release waits for the hold."""
    rules = short_financial_rules(tmp_path, seconds=9)
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_retention_file=rules)
    async with running_harness(settings) as harness:
        deps = dependencies(settings, harness.runtime)
        request_id, subject = await harness.request_deletion()
        assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
        operator = uuid.uuid4()
        async with harness.pool.acquire() as conn, conn.transaction():
            held = await handlers.place_hold(conn, deps, request_id, "claim 12", operator)
            assert await legal_holds.in_force(conn, subject) is not None
        assert held.request.stage == "complete"

        await asyncio.sleep(12)  # past the period, and the worker's rounds
        assert {c.request_id for c in harness.stores.seen} == {request_id}  # no release
        sent = await harness.pool.fetchval(
            "SELECT sent_at FROM retention_releases WHERE request_id = $1", request_id
        )
        assert sent is None

        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.lift_hold(conn, deps, request_id, operator)
        release = await harness.release_of(request_id)
        assert (release.subject_id, release.retain_categories) == (subject, ())


async def test_a_hold_placed_while_the_ticker_looks_at_the_subject_deadlocks_neither(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """The ticker claims a request and looks for its subject's hold; an operator's hold
    action has written the hold's row and goes on to lock the subject's requests. The
    ticker must not wait for that row: each would wait for the other."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    async with running_harness(settings, with_worker=False) as harness:
        deps = dependencies(settings, harness.runtime)
        subject, operator = uuid.uuid4(), uuid.uuid4()
        harness.stores.subjects.add(subject)
        through, slipped = uuid.uuid4(), uuid.uuid4()
        async with harness.pool.acquire() as conn, conn.transaction():
            for request_id in (through, slipped):
                asked = DeletionRequested(
                    user_id=subject, request_id=request_id, initiated_by="user", scope="account"
                )
                await handlers.deletion_requested(conn, deps, asked)
            # One in grace, not due; one that slipped past an earlier hold, due to erase.
            await conn.execute(
                "UPDATE deletion_requests SET stage = 'grace', next_check_at = NULL"
                " WHERE request_id = $1",
                through,
            )
            await conn.execute(
                "UPDATE deletion_requests SET stage = 'holds', cancel_window_closed_at = now(),"
                " next_check_at = now() WHERE request_id = $1",
                slipped,
            )
            await legal_holds.place(conn, subject, "claim 1", operator, datetime.now(UTC), through)

        ticker = Ticker(harness.pool, deps)
        async with harness.pool.acquire() as conn, conn.transaction():
            await legal_holds.lock_subject(conn, subject)
            await conn.execute(  # the hold's row written, as a hold action does
                "UPDATE legal_holds SET reason = reason WHERE subject_id = $1", subject
            )
            tick = asyncio.create_task(ticker.tick())
            await asyncio.sleep(1)  # the ticker claims `slipped` and looks for the hold
            await handlers.place_hold(conn, deps, through, "claim 2", operator)
        await asyncio.wait_for(tick, 30)

        row = await harness.pool.fetchrow(
            "SELECT stage, step_failures FROM deletion_requests WHERE request_id = $1", slipped
        )
        assert row is not None
        assert (row["stage"], row["step_failures"]) == ("paused", 0)
        assert harness.stores.seen == []


async def test_a_hold_placed_again_keeps_its_first_placement_and_records_the_second(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    async with running_harness(settings, with_worker=False) as harness:
        deps = dependencies(settings, harness.runtime)
        subject = uuid.uuid4()
        first, second = uuid.uuid4(), uuid.uuid4()
        async with harness.pool.acquire() as conn, conn.transaction():
            for request_id in (first, second):
                asked = DeletionRequested(
                    user_id=subject, request_id=request_id, initiated_by="user", scope="device",
                    item_id=uuid.uuid4(),
                )  # fmt: skip
                await handlers.deletion_requested(conn, deps, asked)
            # Both erased already: a claim comes up after, then a second one.
            await conn.execute(
                "UPDATE deletion_requests SET stage = 'complete', erasing_started_at = now(),"
                " erased_at = now(), next_check_at = NULL WHERE subject_id = $1",
                subject,
            )
        placer, restater = uuid.uuid4(), uuid.uuid4()
        for request_id, reason, operator in (
            (first, "claim 1", placer),
            (second, "claim 2", restater),
        ):
            async with harness.pool.acquire() as conn, conn.transaction():
                await handlers.place_hold(conn, deps, request_id, reason, operator)

        hold = await harness.pool.fetchrow(
            "SELECT id, reason, placed_by, request_id FROM legal_holds WHERE subject_id = $1",
            subject,
        )
        assert hold is not None
        assert (hold["reason"], hold["placed_by"], hold["request_id"]) == ("claim 1", placer, first)
        restated = await harness.pool.fetch(
            "SELECT reason, stated_by, request_id FROM legal_hold_restatements WHERE hold_id = $1",
            hold["id"],
        )
        assert [tuple(r) for r in restated] == [("claim 2", restater, second)]

        # Operators see the hold on either request: placed first, restated since.
        context = Context(settings, harness.runtime, deps)
        shown = await operators.request_detail(second, None, context)  # type: ignore[arg-type]
        held = shown["legal_hold"]
        assert (held["reason"], held["placed_by"], held["request_id"]) == (
            "claim 1", str(placer), str(first),
        )  # fmt: skip
        assert [(r["reason"], r["stated_by"]) for r in held["restatements"]] == [
            ("claim 2", str(restater))
        ]


async def test_a_hold_restated_through_a_request_it_paused_is_recorded(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=3600)
    async with running_harness(settings, with_worker=False) as harness:
        deps = dependencies(settings, harness.runtime)
        subject, request_id = uuid.uuid4(), uuid.uuid4()
        asked = DeletionRequested(
            user_id=subject, request_id=request_id, initiated_by="user", scope="account"
        )
        placer, restater = uuid.uuid4(), uuid.uuid4()
        async with harness.pool.acquire() as conn, conn.transaction():
            await handlers.deletion_requested(conn, deps, asked)
            await conn.execute(
                "UPDATE deletion_requests SET stage = 'grace' WHERE request_id = $1", request_id
            )
            held = await handlers.place_hold(conn, deps, request_id, "claim 1", placer)
        assert (held.request.stage, held.request.paused_from) == ("paused", "grace")

        async with harness.pool.acquire() as conn, conn.transaction():
            again = await handlers.place_hold(conn, deps, request_id, "claim 2", restater)
        assert again.request == held.request  # still paused from grace, nothing re-entered
        assert await harness.history(request_id) == ["requested", "paused"]
        context = Context(settings, harness.runtime, deps)
        shown = await operators.request_detail(request_id, None, context)  # type: ignore[arg-type]
        hold = shown["legal_hold"]
        assert (hold["reason"], hold["placed_by"]) == ("claim 1", str(placer))
        assert [(r["reason"], r["stated_by"], r["request_id"]) for r in hold["restatements"]] == [
            ("claim 2", str(restater), str(request_id))
        ]
