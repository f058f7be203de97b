"""Holding back a notice whose work fails, so the notices behind it still go.

The scheduler, the email planner and the inbox-outcome publisher each take the oldest
notice needing work. If that work raised for one notice (a bug, a constraint, bad stored
data) and the notice were taken again at once, every notice behind it would wait for
ever. So each notice's work runs in a savepoint: a failure undoes that notice's work
only, is recorded on the notice, and holds it back for a time that doubles with each
failure in a row, up to :data:`MAX_HOLD_SECONDS`. It is retried after every hold, never
dropped, and goes on its own once the cause is fixed; operators see its failures on the
ops view of the notice meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from shared.bus.consumer import OUTAGES
from shared.db.pool import Connection
from shared.pii import redact

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_HOLD_SECONDS = 2.0  # doubled with each further failure in a row
MAX_HOLD_SECONDS = 15 * 60
LAST_FAILURE_CHARS = 200

# The condition every loop's selection adds: held notices wait, the others go.
NOT_HELD = "(held_until IS NULL OR held_until <= now())"

# clock_timestamp(), not now(): a scheduler batch may run long, and a hold counted from
# the transaction's start could be over before it commits. The exponent is capped (far
# above the hold's cap): 2 ** failures overflows a double after some eleven days.
_HOLD = """
UPDATE notices
SET failures = failures + 1, last_failure = $2,
    held_until = clock_timestamp()
                 + make_interval(secs => least($4::float8 * power(2, least(failures, 30)),
                                               $3::float8))
WHERE notice_id = $1
RETURNING failures
"""

# ``failures`` counts failures in a row, so a notice that recovered and meets a new
# problem starts again with a short hold; ``last_failure`` stays, so operators can still
# tell what delayed a notice that went in the end.
_RELEASE = (
    "UPDATE notices SET failures = 0, held_until = NULL"
    " WHERE notice_id = $1 AND held_until IS NOT NULL"
)


def describe(exc: BaseException) -> str:
    """What operators read of a failure: its type and the first line of its message.

    Redacted (addresses, phone numbers...) and cut short: a message may quote stored
    values, which must not reach the ops view.
    """
    message = redact(str(exc).strip().partition("\n")[0])
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:LAST_FAILURE_CHARS]


async def isolated(
    conn: Connection, loop: str, notice_id: UUID, work: Callable[[], Awaitable[T]]
) -> T | None:
    """``work``'s result, or None if it raised: then the notice is held back.

    ``conn`` is in the loop's transaction, which holds the notice's row lock: the failure
    is recorded in it, so it commits with the other notices' work.
    """
    try:
        async with conn.transaction():
            result = await work()
    except OUTAGES:
        raise  # the servers, not the notice: the loop waits for them, holding nothing
    except Exception as exc:
        failures = await conn.fetchval(
            _HOLD, notice_id, describe(exc), MAX_HOLD_SECONDS, FIRST_HOLD_SECONDS
        )
        log.error(
            "%s: notice %s failed (%s in a row), held back",
            loop,
            notice_id,
            failures,
            exc_info=exc,
        )
        return None
    await conn.execute(_RELEASE, notice_id)
    return result
