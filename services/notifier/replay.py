"""Replay email dead letters: ``python -m services.notifier.replay [--notice ID] [--id N ...]``.

Puts dead deliveries (5xx, gate refusals, retries exhausted, no contact card) back in
the send queue, after their cause was fixed. Without options, every dead letter but
those in doubt.

A dead letter in doubt (its reason starts with ``in doubt:``) may have reached the mail
server already: it is replayed only by ``--id``, after its Message-ID was not found in
the server's log, or the recipient gets it twice. That is the ``message_id``
``GET /api/notifier/ops/dead-letters`` lists with it: ``<uuid.email@notifier.imt>``, a
name-based UUID of the notice and the user (``services.notifier.sender.message_id``).
"""

from __future__ import annotations

import argparse
import asyncio
from uuid import UUID

from services.notifier import store
from services.notifier.bootstrap import DATABASE
from services.notifier.config import NotifierSettings
from shared.db.pool import service_pool


async def replay(settings: NotifierSettings, notice_id: UUID | None, ids: list[int]) -> int:
    pool = await service_pool(settings, DATABASE, max_size=1)
    try:
        async with pool.acquire() as conn:
            return await store.replay_dead(conn, notice_id=notice_id, delivery_ids=ids)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notifier.replay", description=__doc__)
    parser.add_argument("--notice", type=UUID, help="only this notice's dead letters")
    parser.add_argument("--id", type=int, action="append", default=[], help="a delivery id")
    args = parser.parse_args(argv)
    count = asyncio.run(replay(NotifierSettings(), args.notice, args.id))
    print(f"replayed {count} dead letter(s)")  # noqa: T201 - a command-line tool
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
