from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.bus.selftest import EFFECTS_DDL


@pytest.fixture
async def conn(scratch_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the scratch database, with the probes' effect table."""
    connection = await asyncpg.connect(scratch_dsn)
    await connection.execute(EFFECTS_DDL)
    yield connection
    await connection.close()
