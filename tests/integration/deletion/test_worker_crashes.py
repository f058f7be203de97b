"""The worker killed with SIGKILL in every stage still completes every request, once.

The worker runs as a real process (``python -m services.deletion.worker``) on a scratch
database and scratch topics. It is killed from outside whenever requests sit in a stage
it has not been killed in yet, and from inside at the narrow windows (shared.bus.faults
crash points: before a stage change commits, right after the vault shred, after the
consumer's effects). Every request must end ``complete`` with each stage entered
exactly once, every store's receipt, one certificate and its key shredded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from services.deletion import backups
from services.deletion.config import DeletionSettings
from shared.config import PlatformSettings
from tests.integration.deletion.harness import harness_settings, running_harness, scratch_topics
from tests.support.processes import QUICK_FAILOVER, end

REPO = Path(__file__).resolve().parents[3]
REQUESTS = 24
HAPPY_PATH = ["requested", "grace", "holds", "erasing", "shredded", "backups_pending", "complete"]
CRASH_POINTS = ",".join(
    [
        "deletion.grace.before_commit:0.01",
        "deletion.holds.before_commit:0.01",
        "deletion.erasing.before_commit:0.02",
        "deletion.after_shred:0.05",
        "deletion.backups_pending.before_commit:0.05",
        # Rolled every tick (0.1 s), busy or idle: at 0.01 a worker died every ~10 s and
        # spent most of the run rejoining its groups; at 0.002, a death or two a run.
        "deletion.after_tick:0.002",
        "consumer.after_effects:0.05",
    ]
)
# Until a worker has died at a crash point, each one dies at its first shred: that the
# points fire at all must not be left to chance (their odds above are small).
FIRST_CRASH_POINTS = "deletion.after_shred:1"
KILL_IN = ("grace", "erasing", "backups_pending")


class WorkerProcess:
    def __init__(self, settings: DeletionSettings) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "IMT_ENVIRONMENT": "test",
            "IMT_DELETION_DATABASE_DSN": settings.deletion_database_dsn or "",
            "IMT_DELETION_TOPIC_SUFFIX": settings.deletion_topic_suffix,
            "IMT_DELETION_GRACE_SECONDS": str(settings.deletion_grace_seconds),
            "IMT_DELETION_TICK_SECONDS": "0.1",
            "IMT_DELETION_RETRY_SECONDS": "0.5",
            "IMT_DELETION_STORE_TIMEOUT_SECONDS": "120",
            "IMT_DELETION_BACKUP_POLL_SECONDS": "0.5",
            "IMT_DELETION_VERIFY_LEASE_SECONDS": "3",
            "IMT_BACKUP_DIR": str(settings.backup_dir()),
            "IMT_LOG_LEVEL": "WARNING",
            **QUICK_FAILOVER,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.self_kills = 0
        self.kills: list[str] = []

    def start(self) -> None:
        points = CRASH_POINTS if self.self_kills else FIRST_CRASH_POINTS
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.deletion.worker"],
            cwd=REPO,
            env={**self.env, "IMT_CRASH_POINTS": points},
        )

    def restart_if_dead(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            assert self.proc.returncode == -signal.SIGKILL, f"worker exited {self.proc.returncode}"
            self.self_kills += 1
            self.start()

    def kill(self, stage: str) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills.append(stage)
        self.start()

    def stop(self) -> None:
        end(self.proc)


# Past the monitor's deadline below, which is past the default 300 s: set-up (scratch
# topics, the harness, a backup snapshot) runs inside this limit too.
@pytest.mark.timeout(900)
async def test_sigkill_in_every_stage_completes_every_request_once(
    settings: PlatformSettings, scratch_dsn: str, tmp_path: Path
) -> None:
    async with scratch_topics(DeletionSettings(environment="test")) as suffix:
        # Long enough that requests are still in grace when the kill loop looks, even after
        # a self-killed worker spent ~10 s rejoining its consumer groups.
        config = harness_settings(scratch_dsn, suffix, tmp_path, deletion_grace_seconds=15.0)
        async with running_harness(config, with_worker=False) as harness:
            harness.stores.ignore_first = 1  # every request waits for one resend
            # Live until the kill in backups_pending is done (expired below), so requests
            # wait in that stage however long the earlier ones took on a slow run.
            snapshot = await backups.take(
                config, retention=timedelta(days=1), databases=["analytics"]
            )
            worker = WorkerProcess(config)
            worker.start()
            ids: list[UUID] = []
            submitted = asyncio.Event()

            async def kill_in_each_stage() -> None:
                # Watches from the first request on: a worker that killed itself is
                # restarted at once, and each stage gets its kill while requests are in it.
                deadline = time.monotonic() + 600  # each self-kill costs a group rejoin
                expired = False
                while time.monotonic() < deadline:
                    worker.restart_if_dead()
                    stages = {i: await harness.stage(i) for i in list(ids)}
                    for stage in KILL_IN:
                        if stage not in worker.kills and stage in stages.values():
                            worker.kill(stage)
                    if not expired and "backups_pending" in worker.kills:
                        await harness.pool.execute(
                            "UPDATE backup_snapshots SET expires_at = now() WHERE snapshot_id = $1",
                            snapshot.snapshot_id,
                        )
                        # The worker expires due snapshots too: whoever did it, once the
                        # folder is gone there is nothing left to expire.
                        await backups.expire(config)
                        expired = not snapshot.folder.exists()
                    if submitted.is_set() and all(s == "complete" for s in stages.values()):
                        return
                    await asyncio.sleep(0.05)

            monitor = asyncio.create_task(kill_in_each_stage())
            try:
                for _ in range(3):  # waves, so that stages overlap
                    ids += [(await harness.request_deletion())[0] for _ in range(REQUESTS // 3)]
                    await asyncio.sleep(0.7)
                submitted.set()
                await monitor
            finally:
                monitor.cancel()
                worker.stop()

            progress = {i: await harness.stage(i) for i in ids}
            assert set(worker.kills) == set(KILL_IN), (worker.self_kills, progress)
            assert worker.self_kills > 0, "no crash point fired"  # the first shred's, at least
            stages = {i: await harness.stage(i) for i in ids}
            assert list(stages.values()) == ["complete"] * REQUESTS, stages
            for request_id in ids:
                assert await harness.history(request_id) == HAPPY_PATH
            # The erasures' own receipts (their retention releases are answered too, each
            # under its own erase id).
            receipts = await harness.pool.fetchval(
                "SELECT count(*) FROM store_receipts WHERE erase_id = ANY($1)", ids
            )
            certificates = await harness.pool.fetchval(
                "SELECT count(*) FROM certificates WHERE request_id = ANY($1)", ids
            )
            assert (receipts, certificates) == (3 * REQUESTS, REQUESTS)
            vault = harness.runtime.vault
            assert vault is not None
            for subject in harness.stores.subjects:
                assert await vault.is_shredded(subject)
