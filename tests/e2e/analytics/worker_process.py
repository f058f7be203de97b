"""An aggregator of the test's own: a worker process (as the Procfile runs it) on a
scratch copy of analytics.visits (the ``visits_topic`` fixture), so a test can kill it
or feed it anything without touching the platform's worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from shared.config import PlatformSettings
from tests.support.processes import QUICK_FAILOVER, end

REPO = Path(__file__).resolve().parents[3]


class Worker:
    def __init__(self, settings: PlatformSettings, topic: str) -> None:
        self.group = f"analytics-crash-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "IMT_ANALYTICS_VISITS_TOPIC": topic,
            "IMT_ANALYTICS_WORKER_GROUP": self.group,
            "IMT_ANALYTICS_CLOSE_INTERVAL_SECONDS": "3600",
            **QUICK_FAILOVER,
        }
        self.datadir = Path(settings.state_dir) / "faust" / self.group
        self.log = Path(tempfile.mkstemp(prefix="analytics-crash-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.analytics.worker"],
                cwd=REPO, env=self.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"worker died by itself:\n{self.tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        end(self.proc)
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.log.unlink(missing_ok=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]
