"""The accounts queries that replaced several round trips with one, on real PostgreSQL:
they must keep the guarantees of the queries they replaced."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.accounts import store
from shared.bus.outbox import outbox_arrays
from shared.db.pool import Connection
from shared.events.catalogue.accounts import ProfileUpdated
from tests.integration.accounts.users import stored_user


async def test_the_session_check_answers_the_profile_row_only_for_an_open_session(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        user_id, session_id = await stored_user(conn), uuid.uuid4()
        expires = datetime.now(UTC) + timedelta(days=1)
        await store.open_session_with_refresh(conn, session_id, user_id, "user", b"h", expires)
        row = await store.user_session(conn, session_id, user_id)
        assert row is not None
        assert row["id"] == user_id
        assert set(row.keys()) == set(store.PROFILE_COLUMNS)  # never the password hash
        assert await store.user_session(conn, session_id, uuid.uuid4()) is None  # not theirs
        assert await store.user_session(conn, uuid.uuid4(), user_id) is None  # no session

        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        gone = await store.user_session(conn, session_id, user_id)
        assert gone is not None
        assert gone["id"] is None  # open, but the account is gone

        await store.revoke_session(conn, session_id, "logout")
        assert await store.user_session(conn, session_id, user_id) is None


async def test_a_session_and_its_refresh_token_are_written_together(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        session_id, expires = uuid.uuid4(), datetime.now(UTC) + timedelta(days=1)
        await store.open_session_with_refresh(
            conn, session_id, uuid.uuid4(), "operator", b"token-hash", expires
        )
        token = await store.refresh_token(conn, b"token-hash")
        assert token is not None
        assert (token["session_id"], token["kind"]) == (session_id, "operator")
        with pytest.raises(asyncpg.CheckViolationError):  # one statement: all or nothing
            await store.open_session_with_refresh(
                conn, uuid.uuid4(), uuid.uuid4(), "nobody", b"other-hash", expires
            )
        assert await store.refresh_token(conn, b"other-hash") is None


async def test_parallel_attempts_at_one_account_see_each_others_failures(
    pool: asyncpg.Pool,
) -> None:
    key = uuid.uuid4().bytes
    first_locked, first_done = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with pool.acquire() as conn, conn.transaction():
            row = await store.lock_throttle(conn, key)
            assert row["failures"] == 0  # created at 0
            first_locked.set()
            await asyncio.sleep(0.2)  # the second attempt must wait for this one
            now = datetime.now(UTC)
            await store.save_throttle(conn, key, "account", 1, now, None, False)
            first_done.set()

    async def second() -> int:
        await first_locked.wait()
        async with pool.acquire() as conn, conn.transaction():
            row = await store.lock_throttle(conn, key)
            assert first_done.is_set()  # it waited for the lock
            failures: int = row["failures"]
            return failures

    _, seen = await asyncio.gather(first(), second())
    assert seen == 1  # the latest committed count, not the one before the wait


async def _as_read(conn: Connection, user_id: uuid.UUID) -> asyncpg.Record:
    """The user's row as a request's session check reads it."""
    row = await conn.fetchrow(
        f"SELECT {', '.join(store.PROFILE_COLUMNS)} FROM users WHERE id = $1", user_id
    )
    assert row is not None
    return row


async def test_an_edit_on_a_stale_read_changes_and_queues_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        seen = await _as_read(conn, user_id)
        _, outbox = outbox_arrays(
            [(ProfileUpdated(user_id=user_id, fields=("name",)), str(user_id))], source="test"
        )
        # Another request changes a card field after this one read the row.
        await conn.execute("UPDATE users SET marketing_email = NOT marketing_email")
        stale = await store.edit_as_read(conn, seen, b"sealed-new", "fr", datetime.now(UTC), outbox)
        assert stale is False
        assert await conn.fetchval("SELECT name FROM users") == b"sealed-name"
        assert await conn.fetchval("SELECT count(*) FROM bus_outbox") == 0

        fresh = await _as_read(conn, user_id)
        done = await store.edit_as_read(conn, fresh, b"sealed-new", "fr", datetime.now(UTC), outbox)
        assert done is True
        assert await conn.fetchval("SELECT name FROM users") == b"sealed-new"
        assert await conn.fetchval("SELECT count(*) FROM bus_outbox") == 1


async def test_card_versions_only_grow_whichever_clock_set_the_last(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        ahead = datetime.now(UTC) + timedelta(hours=1)  # set by a clock running ahead
        await conn.execute("UPDATE users SET updated_at = $1", ahead)
        changed = await store.update_user_returning(conn, user_id, locale="fr")
        assert changed is not None
        assert changed["updated_at"] > ahead


@pytest.mark.promise("P-26")
async def test_no_child_under_13_consents_to_a_disclosure(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        recipient_id, operator_id = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
            " VALUES ($1, 'Partner', 'partner', 'offers', '{email,name}', $2)",
            recipient_id,
            operator_id,
        )
        users = {}
        for band in ("adult", "13_to_17", "unknown", "under_13"):
            user_id = uuid.uuid4()
            guardian = b"sealed-guardian" if band == "under_13" else None
            await store.insert_user(
                conn, id=user_id, email_index=user_id.bytes, email=b"e", name=b"n",
                password_hash="$argon2id$not-a-real-hash", age_band=band, active=True,
                guardian_email=guardian, guardian_consented=band == "under_13" or None,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO consents (user_id, recipient_id, purpose, granted)"
                " VALUES ($1, $2, 'offers', true)",
                user_id,
                recipient_id,
            )
            users[band] = user_id
        consenting = await store.consenting_users(conn, recipient_id, "offers")
        # The child's own grant (and the guardian's consent to the account) is not one.
        assert set(consenting) == {users["adult"], users["13_to_17"], users["unknown"]}


@pytest.mark.promise("P-15")
async def test_an_operators_creators_are_every_identity_above_it(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        root, admin, support, sibling = (uuid.uuid4() for _ in range(4))
        for operator_id, created_by in (
            (root, None), (admin, root), (support, admin), (sibling, root),
        ):  # fmt: skip
            created = await store.insert_operator(
                conn, operator_id, operator_id.bytes, b"sealed", "$argon2id$x", ["admin"],
                created_by,
            )  # fmt: skip
            assert created
        assert await store.operator_creators(conn, support) == {admin, root}
        assert await store.operator_creators(conn, admin) == {root}
        assert await store.operator_creators(conn, sibling) == {root}
        assert await store.operator_creators(conn, root) == set()
        assert await store.operator_creators(conn, uuid.uuid4()) == set()  # no such operator
        # A loop (not possible through the API) still ends.
        await conn.execute("UPDATE operators SET created_by = $2 WHERE id = $1", root, support)
        assert await store.operator_creators(conn, support) == {admin, root, support}


@pytest.mark.promise("P-18")
async def test_no_user_whose_deletion_is_under_way_is_exported(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        recipient_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
            " VALUES ($1, 'Processor', 'processor', 'support', '{user_id}', $2)",
            recipient_id,
            uuid.uuid4(),
        )
        users = {}
        for status in ("none", "pending_approval", "requested", "confirmed", "cancelled"):
            user_id = await stored_user(conn)
            await conn.execute(
                "INSERT INTO consents (user_id, recipient_id, purpose, granted)"
                " VALUES ($1, $2, 'support', true)",
                user_id,
                recipient_id,
            )
            if status != "none":
                await conn.execute(
                    "INSERT INTO deletion_requests (id, user_id, initiated_by, status)"
                    " VALUES ($1, $2, 'operator', $3)",
                    uuid.uuid4(),
                    user_id,
                    status,
                )
            users[status] = user_id
        consenting = await store.consenting_users(conn, recipient_id, "support")
        # In its grace period, or confirmed and waiting (a legal hold): not given away. A
        # request still awaiting a second operator, or cancelled, is no deletion yet.
        assert set(consenting) == {users["none"], users["pending_approval"], users["cancelled"]}
