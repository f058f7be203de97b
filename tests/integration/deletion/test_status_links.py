"""The secret of an account erasure's status link (P-16), on real Kafka and PostgreSQL
with stand-in stores: every EraseSubject of the request carries the same one, so the
notifier mails a working link whichever command it processes first, and the link finds
that request and no other."""

from __future__ import annotations

import uuid
from pathlib import Path

from services.deletion import status_links
from tests.integration.deletion.harness import harness_settings, running_harness


async def test_every_erase_command_of_an_account_carries_the_one_link_that_finds_it(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    async with running_harness(settings) as harness:
        harness.stores.ignore_first = 2  # two commands unanswered: resent twice
        request, _ = await harness.request_deletion()
        device, _ = await harness.request_deletion(scope="device", item_id=uuid.uuid4())
        done = await harness.wait_for([request, device], "complete")
        assert set(done.values()) == {"complete"}

        commands = [c for c in harness.stores.seen if c.request_id == request]
        assert len(commands) == 3
        [key] = {c.status_key for c in commands}
        assert key is not None
        # An item's user keeps their account and its status page: no link.
        assert {c.status_key for c in harness.stores.seen if c.request_id == device} == {None}
        async with harness.pool.acquire() as conn:
            assert await status_links.request_of(conn, key) == request
            assert await status_links.key_for(conn, request) == key  # minted once
            for wrong in (key[:-1], key.upper(), str(request), ""):
                assert await status_links.request_of(conn, wrong) is None
            stored = await conn.fetchval(
                "SELECT key_hash FROM status_links WHERE request_id = $1", request
            )
        assert bytes(stored) == status_links.key_hash(key)
