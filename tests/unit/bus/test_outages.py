"""What the consumers wait out (back off and retry) rather than dead-letter."""

from __future__ import annotations

import asyncpg
import pytest

from shared.bus.consumer import OUTAGES


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.AdminShutdownError,  # 57P01: the server is shutting down (a restart)
        asyncpg.CrashShutdownError,  # 57P02
        asyncpg.CannotConnectNowError,  # 57P03: starting up, or in recovery
        asyncpg.ConnectionDoesNotExistError,
        ConnectionRefusedError,
        asyncpg.DeadlockDetectedError,  # 40P01: passes on a retry
        asyncpg.SerializationError,  # 40001
        asyncpg.ReadOnlySQLTransactionError,  # 25006: a fail-over to a standby under way
        asyncpg.TooManyConnectionsError,  # 53300
        asyncpg.DiskFullError,  # 53100
        # A rolling upgrade: the previous release's code on the new schema, or the reverse.
        asyncpg.UndefinedColumnError,  # 42703: a column a migration dropped or renamed
        asyncpg.UndefinedTableError,  # 42P01
        asyncpg.UndefinedFunctionError,  # 42883
        asyncpg.InsufficientPrivilegeError,  # 42501: a grant not there yet
    ],
)
def test_postgresql_going_away_or_coming_back_is_an_outage(error: type[Exception]) -> None:
    assert issubclass(error, OUTAGES)


@pytest.mark.parametrize("error", [asyncpg.UniqueViolationError, asyncpg.DataError, ValueError])
def test_a_bad_event_is_not_an_outage(error: type[Exception]) -> None:
    """These retry the event alone and then dead-letter it, so one cannot stop the rest."""
    assert not issubclass(error, OUTAGES)
