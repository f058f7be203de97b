"""The Faust drain (shared.bus.faust_drain) against a real broker: full stream buffers
pause partitions and a second worker joining suspends the flow, and still every probe
is applied exactly once."""

import asyncpg

from shared.bus import reliable_producer
from shared.bus.selftest import probe_envelopes
from shared.config import PlatformSettings
from shared.events import encode_envelope
from tests.support.probes import probe_keys_and_seqs, spawn_selftest, wait_for_effects
from tests.support.processes import end

PROBES = 3000
KEYS = 60
TINY_BUFFER = "64"  # far below one fetch: the conductor blocks and partitions pause


async def test_full_buffers_and_a_rebalance_lose_and_double_nothing(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        keys, seqs = probe_keys_and_seqs(PROBES, KEYS)
        sent = [
            await producer.send(scratch_topic, encode_envelope(e), key=e.key())
            for e in probe_envelopes(keys, seqs)
        ]
        for future in sent:
            await future
    finally:
        await producer.stop()

    group = f"{scratch_topic}.faust"
    args = ("--topic", scratch_topic, "--group", group, "--stream-buffer", TINY_BUFFER)
    first = spawn_selftest("faust", scratch_dsn, *args)
    second = None
    try:
        assert await wait_for_effects(conn, PROBES // 10, timeout=90, worker=first) >= PROBES // 10
        # A second member: the first worker's partitions are revoked mid-stream, its
        # flow suspended while fetched batches are still being handed over.
        second = spawn_selftest("faust", scratch_dsn, *args)
        assert await wait_for_effects(conn, PROBES, timeout=120, worker=first) == PROBES
    finally:
        for worker in (first, second):
            end(worker, grace_seconds=30)  # SIGKILL if it outlives the grace: none is left

    applied = await conn.fetchval("SELECT count(*) FROM probe_effects")
    assert applied == PROBES  # and wait_for_effects counted PROBES distinct ids
    # Each key's probes were applied in the order they were published.
    disorder = await conn.fetchval(
        """
        SELECT count(*) FROM (
            SELECT seq < lag(seq) OVER (PARTITION BY key ORDER BY applied) AS backwards
            FROM probe_effects
        ) s WHERE backwards
        """
    )
    assert disorder == 0
