"""10,000 events while the relay and the consumer are killed with SIGKILL at random.

Two kinds of kill: from outside at random moments, and from inside at the narrow
windows where a crash causes redelivery (shared.bus.faults crash points). Until a role
has died at its crash point, each of its processes dies there on its first batch, so
the redelivery path is taken in every run, not only with lucky dice. Every event's
effect must exist exactly once and, per key, in order. The seed is printed so a
failure's schedule of external kills can be replayed (IMT_CRASH_SEED).
"""

import asyncio
import os
import random
import signal
import subprocess

import asyncpg

from shared.bus.selftest import probe_envelopes, queue_probes
from tests.support.probes import (
    effects_exactly_once_in_order,
    probe_keys_and_seqs,
    spawn_selftest,
    wait_for_effects,
)
from tests.support.processes import QUICK_FAILOVER

EVENTS = 10_000
BATCH = 100
KEYS = 50
KILLS = 8
CRASH_POINTS = {"relay": "relay.after_publish", "consume": "consumer.after_effects"}


class Processes:
    """The relay and consumer processes, restartable after a kill."""

    def __init__(self, dsn: str, topic: str) -> None:
        self.args = {
            "relay": ("relay", dsn),
            "consume": ("consume", dsn, "--topic", topic, "--group", f"{topic}.crash"),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.self_kills = {role: 0 for role in self.args}

    def start(self, role: str) -> None:
        name, dsn, *extra = self.args[role]
        odds = "0.1" if self.self_kills[role] else "1"
        env = {"IMT_CRASH_POINTS": f"{CRASH_POINTS[role]}:{odds}", **QUICK_FAILOVER}
        self.procs[role] = spawn_selftest(name, dsn, *extra, env=env)

    def _count_if_dead(self, role: str) -> bool:
        proc = self.procs[role]
        if proc.poll() is None:
            return False
        assert proc.returncode == -signal.SIGKILL, f"{role} exited {proc.returncode}"
        self.self_kills[role] += 1
        return True

    def restart_the_dead(self) -> None:
        for role in list(self.procs):
            if self._count_if_dead(role):
                self.start(role)

    def kill(self, role: str) -> bool:
        """SIGKILL ``role``; False if it had died at a crash point first (that counts)."""
        if self._count_if_dead(role):
            return False
        self.procs[role].send_signal(signal.SIGKILL)
        self.procs[role].wait()
        return True

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _write_events(conn: asyncpg.Connection, topic: str, rng: random.Random) -> None:
    keys, seqs = probe_keys_and_seqs(EVENTS, keys=KEYS)
    for start in range(0, EVENTS, BATCH):
        envelopes = probe_envelopes(keys[start : start + BATCH], seqs[start : start + BATCH])
        await queue_probes(conn, topic, envelopes)
        await asyncio.sleep(rng.uniform(0.0, 0.03))


async def _supervise(processes: Processes, done: asyncio.Event) -> None:
    while not done.is_set():
        processes.restart_the_dead()
        await asyncio.sleep(0.05)


async def _kill_at_random(processes: Processes, rng: random.Random) -> list[str]:
    killed = []
    for round_ in range(KILLS):
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        processes.restart_the_dead()
        roles = ["relay", "consume"] if round_ % 4 == 3 else [rng.choice(["relay", "consume"])]
        for role in roles:
            if processes.kill(role):
                killed.append(role)
            processes.start(role)
    return killed


async def test_sigkill_at_random_moments_loses_and_repeats_nothing(
    conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    seed = int(os.environ.get("IMT_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed}")
    rng = random.Random(seed)
    processes = Processes(scratch_dsn, scratch_topic)
    processes.start("relay")
    processes.start("consume")
    finished = asyncio.Event()
    supervisor = asyncio.create_task(_supervise(processes, finished))
    try:
        _, killed = await asyncio.gather(
            _write_events(conn, scratch_topic, rng), _kill_at_random(processes, rng)
        )
        done = await wait_for_effects(conn, EVENTS, timeout=180)
    finally:
        finished.set()
        await supervisor
        processes.stop_all()

    assert {"relay", "consume"} <= set(killed), f"not every role was SIGKILLed: {killed}"
    assert all(processes.self_kills.values()), f"a crash point never fired: {processes.self_kills}"
    rows, distinct, disordered = await effects_exactly_once_in_order(conn)
    assert done == EVENTS
    assert (rows, distinct) == (EVENTS, EVENTS), f"seed {seed}"
    assert disordered == [], f"seed {seed}"
