"""One notice whose work fails holds up no other: it is held back, retried, never dropped.

The failure is real: a trigger in the scratch database raises whenever the work of a
"poisoned" notice moves it on (status, email cursor, pending outcomes), after that work
already wrote its rows. So each test also proves those rows are rolled back with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from services.notifier import handlers, holds, store
from services.notifier.cards_caught_up import CardsCaughtUp
from services.notifier.gauges import NotifierGauges
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.observability import Metrics
from shared.service import Runtime

Step = Callable[[Connection], Awaitable[int | None]]

_POISON = """
CREATE TABLE poisoned (notice_id uuid PRIMARY KEY);
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Recording the notice's failure still goes: only its work moving it on fails.
    IF NEW.notice_id IN (SELECT notice_id FROM poisoned)
       AND (NEW.status, NEW.email_cursor, NEW.inbox_outcomes_pending)
           IS DISTINCT FROM (OLD.status, OLD.email_cursor, OLD.inbox_outcomes_pending) THEN
        RAISE EXCEPTION 'corrupt stored value, ask jane.doe@example.org';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER poison BEFORE UPDATE ON notices FOR EACH ROW EXECUTE FUNCTION poison();
"""
USERS = 3
# None of these notices is marketing: the cards are never asked about.
FAN_OUT_DUE = partial(
    handlers.fan_out_due, cards=CardsCaughtUp(PlatformSettings(environment="test"))
)


@pytest.fixture
async def db(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The scratch database, with the means to poison a notice."""
    await pool.execute(_POISON)
    return pool


async def poison(pool: asyncpg.Pool, notice_id: uuid.UUID) -> None:
    await pool.execute("INSERT INTO poisoned VALUES ($1)", notice_id)


async def cure_and_end_holds(pool: asyncpg.Pool) -> None:
    """The cause fixed, and the holds over (rather than sleeping through them)."""
    await pool.execute("DELETE FROM poisoned")
    await pool.execute(
        "UPDATE notices SET held_until = now() - interval '1 second' WHERE held_until IS NOT NULL"
    )


async def drain(pool: asyncpg.Pool, step: Step) -> int:
    """Run a loop's step, each in its transaction as the worker does, until nothing waits."""
    steps = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            if await step(conn) is None:
                return steps
        steps += 1
        assert steps < 50, "the loop never ran out of work"


def notice(send_at: datetime | None = None) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(),
        template="request_reply",
        category="transactional",
        audience="listed",
        params={"request_id": "r-1"},
        channels=("email", "inbox"),
        recipient="user",
        pinned=False,
        source="test",
        send_at=send_at,
        user_ids=tuple(uuid.uuid4() for _ in range(USERS)),
    )


async def fanned_out(pool: asyncpg.Pool, age_minutes: int) -> uuid.UUID:
    """A notice fanned out to the inbox, its emails and outcomes still to do."""
    n = notice()
    async with pool.acquire() as conn, conn.transaction():
        assert await store.insert_notice(conn, n, scheduled=False)
        await handlers.fan_out(conn, n)
        await conn.execute(
            "UPDATE notices SET created_at = now() - make_interval(mins => $2)"
            " WHERE notice_id = $1",
            n.notice_id,
            age_minutes,
        )
    return n.notice_id


async def scheduled(pool: asyncpg.Pool, due_minutes_ago: int) -> uuid.UUID:
    n = notice(send_at=datetime.now(UTC) - timedelta(minutes=due_minutes_ago))
    async with pool.acquire() as conn:
        assert await store.insert_notice(conn, n, scheduled=True)
    return n.notice_id


async def state(pool: asyncpg.Pool, notice_id: uuid.UUID) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT n.*,"
        " (SELECT count(*) FROM inbox_items i WHERE i.notice_id = n.notice_id) AS items,"
        " (SELECT count(*) FROM deliveries d WHERE d.notice_id = n.notice_id) AS emails"
        " FROM notices n WHERE n.notice_id = $1",
        notice_id,
    )
    assert row is not None
    return row


@pytest.fixture
def long_first_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first hold that outlasts any drain, however slow the run: the held notice is
    not taken again before the test ends the hold itself (how long holds are by default
    is proved below, against the clock read around the failure)."""
    monkeypatch.setattr(holds, "FIRST_HOLD_SECONDS", 600.0)


def assert_held_once(row: asyncpg.Record) -> None:
    assert row["failures"] == 1
    assert row["held_until"] is not None
    assert row["last_failure"].startswith("RaiseError: corrupt stored value")
    assert "jane.doe@example.org" not in row["last_failure"]


def assert_released(row: asyncpg.Record) -> None:
    assert row["held_until"] is None
    assert row["failures"] == 0  # failures in a row: the next failure starts a short hold
    assert row["last_failure"] is not None  # what delayed it stays for operators


@pytest.mark.usefixtures("long_first_hold")
async def test_the_email_planner_goes_past_a_failing_notice(db: asyncpg.Pool) -> None:
    plan = partial(store.plan_email_chunk, chunk=2)  # several chunks per notice
    older = await fanned_out(db, age_minutes=2)
    newer = await fanned_out(db, age_minutes=1)
    await poison(db, older)

    await drain(db, plan)

    done = await state(db, newer)
    assert (done["email_planned"], done["emails"], done["held_until"]) == (True, USERS, None)
    failed = await state(db, older)
    assert_held_once(failed)
    # Its chunk's deliveries were written before its cursor moved: both undone.
    assert (failed["email_planned"], failed["email_cursor"], failed["emails"]) == (False, None, 0)

    await cure_and_end_holds(db)
    await drain(db, plan)

    recovered = await state(db, older)
    assert (recovered["email_planned"], recovered["emails"]) == (True, USERS)
    assert_released(recovered)


@pytest.mark.usefixtures("long_first_hold")
async def test_the_scheduler_holds_only_the_failing_notice_of_its_batch(
    db: asyncpg.Pool,
) -> None:
    # Seven due notices: the scheduler claims five at a time, the oldest first.
    notices = [await scheduled(db, due_minutes_ago=10 - n) for n in range(7)]
    oldest, others = notices[0], notices[1:]
    await poison(db, oldest)

    steps = await drain(db, FAN_OUT_DUE)

    assert steps == 2  # a batch of five, then the two left: the held one is not claimed again
    for notice_id in others:
        row = await state(db, notice_id)
        assert (row["status"], row["items"], row["held_until"]) == ("fanned_out", USERS, None)
    failed = await state(db, oldest)
    assert_held_once(failed)
    # Its inbox items were copied in before its status changed: both undone.
    assert (failed["status"], failed["items"], failed["fanned_out_at"]) == ("scheduled", 0, None)

    await cure_and_end_holds(db)
    await drain(db, FAN_OUT_DUE)

    recovered = await state(db, oldest)
    assert (recovered["status"], recovered["items"]) == ("fanned_out", USERS)
    assert_released(recovered)


@pytest.mark.usefixtures("long_first_hold")
async def test_the_inbox_outcomes_go_past_a_failing_notice(db: asyncpg.Pool) -> None:
    older = await fanned_out(db, age_minutes=2)
    newer = await fanned_out(db, age_minutes=1)
    await poison(db, older)

    await drain(db, store.queue_inbox_outcomes)

    assert (await state(db, newer))["inbox_outcomes_pending"] is False
    failed = await state(db, older)
    assert_held_once(failed)
    assert failed["inbox_outcomes_pending"] is True
    assert await db.fetchval("SELECT count(*) FROM bus_outbox") == USERS  # the newer's only

    await cure_and_end_holds(db)
    await drain(db, store.queue_inbox_outcomes)

    assert await db.fetchval("SELECT count(*) FROM bus_outbox") == 2 * USERS
    assert_released(await state(db, older))


async def test_holds_double_up_to_a_cap_and_never_drop_the_notice(db: asyncpg.Pool) -> None:
    notice_id = await fanned_out(db, age_minutes=1)
    await poison(db, notice_id)
    plan = partial(store.plan_email_chunk, chunk=10)

    async def fail_again(previous_failures: int) -> tuple[float, float]:
        """The hold's length is between these two: the failure happened between two
        readings of the database's clock, however long the drain took."""
        await db.execute(
            "UPDATE notices SET failures = $2, held_until = now() - interval '1 second'"
            " WHERE notice_id = $1",
            notice_id,
            previous_failures,
        )
        before = await db.fetchval("SELECT clock_timestamp()")
        await drain(db, plan)
        after = await db.fetchval("SELECT clock_timestamp()")
        held_until = await db.fetchval(
            "SELECT held_until FROM notices WHERE notice_id = $1", notice_id
        )
        return (held_until - after).total_seconds(), (held_until - before).total_seconds()

    def lasts(hold: tuple[float, float], seconds: float) -> bool:
        return hold[0] <= seconds <= hold[1]

    assert lasts(await fail_again(0), 2)
    assert lasts(await fail_again(2), 8)
    # A notice failing for weeks is still retried every quarter of an hour.
    assert lasts(await fail_again(5000), holds.MAX_HOLD_SECONDS)
    row = await state(db, notice_id)
    assert (row["failures"], row["email_planned"]) == (5001, False)


async def test_an_outage_is_not_the_notice_s_failure(db: asyncpg.Pool) -> None:
    notice_id = await fanned_out(db, age_minutes=1)

    async def unreachable() -> int:
        raise ConnectionResetError("database went away")

    async with db.acquire() as conn, conn.transaction():
        with pytest.raises(ConnectionResetError):
            await holds.isolated(conn, "test", notice_id, unreachable)
    row = await state(db, notice_id)
    assert (row["failures"], row["last_failure"], row["held_until"]) == (0, None, None)


def test_operators_read_a_short_failure_without_personal_data() -> None:
    failure = ValueError(f"no contact for jane.doe@example.org {'x' * 500}\nsecond line")
    described = holds.describe(failure)
    assert described.startswith("ValueError: no contact for ")
    assert "jane.doe@example.org" not in described
    assert len(described) == holds.LAST_FAILURE_CHARS
    assert holds.describe(KeyError()) == "KeyError"


async def test_metrics_show_the_held_notice_and_the_emails_waiting(db: asyncpg.Pool) -> None:
    metrics = Metrics("notifier-test", CollectorRegistry())
    gauges = NotifierGauges(metrics.registry)
    runtime = Runtime(PlatformSettings(), "notifier", db, metrics)
    sample = metrics.registry.get_sample_value
    plan = partial(store.plan_email_chunk, chunk=2)
    older = await fanned_out(db, age_minutes=2)
    await fanned_out(db, age_minutes=1)
    await poison(db, older)
    await drain(db, plan)
    await db.execute("UPDATE deliveries SET next_attempt_at = now() - interval '90 seconds'")
    # Still held when the gauges read it, however slow the run (the first hold is 2 s).
    await db.execute(
        "UPDATE notices SET held_until = now() + interval '10 minutes' WHERE held_until IS NOT NULL"
    )

    await gauges.refresh(runtime)

    assert sample("notices_held") == 1
    assert sample("email_deliveries", {"status": "pending"}) == USERS  # the newer's only
    assert sample("email_deliveries", {"status": "dead"}) == 0
    assert sample("email_dead_last_hour") == 0
    assert 90 <= (sample("email_oldest_due_seconds") or 0) < 120

    await cure_and_end_holds(db)
    await drain(db, plan)
    await db.execute(
        "UPDATE deliveries SET status = 'dead', finished_at = now() WHERE notice_id = $1", older
    )
    # Given up on long ago: still dead, but no longer news for the EmailsGivenUp alert.
    await db.execute(
        "UPDATE deliveries SET finished_at = now() - interval '2 hours' WHERE user_id IN"
        " (SELECT user_id FROM deliveries WHERE notice_id = $1 LIMIT 1)",
        older,
    )
    await gauges.refresh(runtime)

    assert sample("notices_held") == 0
    assert sample("email_deliveries", {"status": "pending"}) == USERS
    assert sample("email_deliveries", {"status": "dead"}) == USERS
    assert sample("email_dead_last_hour") == USERS - 1
