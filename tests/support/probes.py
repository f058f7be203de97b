"""Helpers to run and check the bus's probe events (shared.bus.selftest)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer

from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings

REPO = Path(__file__).resolve().parents[2]


def probe_keys_and_seqs(count: int, keys: int, start: int = 0) -> tuple[list[str], list[int]]:
    """``count`` probes spread over ``keys`` keys, each key's seq increasing."""
    names = [f"subject-{(start + i) % keys}" for i in range(count)]
    counters: dict[str, itertools.count[int]] = defaultdict(itertools.count)
    return names, [next(counters[k]) for k in names]


async def wait_for_effects(
    conn: asyncpg.Connection,
    expected: int,
    timeout: float,
    worker: subprocess.Popen[bytes] | None = None,
) -> int:
    """Wait until ``expected`` distinct probes have effects; return the distinct count."""
    deadline = time.monotonic() + timeout
    while True:
        if worker is not None and worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}")
        done = await conn.fetchval("SELECT count(DISTINCT event_id) FROM probe_effects")
        if done >= expected or time.monotonic() > deadline:
            return int(done)
        await asyncio.sleep(0.2)


async def effects_exactly_once_in_order(conn: asyncpg.Connection) -> tuple[int, int, list[str]]:
    """(rows, distinct events, keys whose effects are out of order)."""
    rows = await conn.fetch("SELECT event_id, key, seq FROM probe_effects ORDER BY applied")
    last: dict[str, int] = {}
    disordered = []
    for r in rows:
        if r["seq"] <= last.get(r["key"], -1):
            disordered.append(r["key"])
        last[r["key"]] = r["seq"]
    return len(rows), len({r["event_id"] for r in rows}), disordered


def spawn_selftest(
    role: str, dsn: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.bus.selftest", role, "--dsn", dsn, *extra],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


async def read_all(
    settings: PlatformSettings, topic: str, expected: int, timeout: float = 30.0
) -> list[object]:
    """Every record of a topic from the beginning (no group): until ``expected`` arrived,
    then on to the end offsets of that moment, so that an extra copy already written is
    returned too (a check of exactly ``expected`` records can then fail)."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[object] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while time.monotonic() < deadline and any(
            [await consumer.position(tp) < end for tp, end in ends.items()]
        ):
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records
