"""Republish every user's contact card, sealed (``contact_card.changed.v2``).

Cards published before version 2 carried email and name in clear on the compacted
contacts topic. Once each user's latest card there is a sealed one, compaction drops
the old records (within the topic's ``max.compaction.lag.ms``). Run once after the
upgrade, with the relay running::

    python -m services.accounts.reseal_cards

Safe to run again: a card published twice is the same card.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from services.accounts.bootstrap import bootstrap
from services.accounts.cards import publish_card
from services.accounts.config import AccountsSettings
from shared.vault import SubjectShredded, Vault

log = logging.getLogger(__name__)
BATCH = 100  # users locked at a time (an edit of one of them waits that long)


async def reseal_all(pool: asyncpg.Pool, vault: Vault, batch: int = BATCH) -> int:
    """Queue a sealed card for every user, ``batch`` users a transaction; how many."""
    queued, after = 0, UUID(int=0)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            # Locked, so a concurrent edit queues its own card after this one.
            users = await conn.fetch(
                "SELECT * FROM users WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE", after, batch
            )
            if not users:
                return queued
            for user in users:
                try:
                    await publish_card(conn, vault, user)
                    queued += 1
                except SubjectShredded:  # erased meanwhile: its tombstone is the last word
                    log.info("a user erased during the reseal was skipped")
            after = users[-1]["id"]


async def _run(settings: AccountsSettings) -> int:
    runtime = await bootstrap(settings)
    try:
        assert runtime.vault is not None
        return await reseal_all(runtime.pool, runtime.vault)
    finally:
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.accounts.reseal_cards",
        description="Queue a sealed contact card for every user (replaces clear v1 cards).",
    )
    parser.parse_args(argv)
    queued = asyncio.run(_run(AccountsSettings()))
    sys.stdout.write(json.dumps({"cards_queued": queued}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
