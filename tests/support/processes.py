"""Ending the real processes that crash tests start and kill."""

from __future__ import annotations

import subprocess

#: For the worker processes a crash test kills: their consumer groups take a silent
#: member for dead after 3 s (10 s by default), so each kill stalls the test for a few
#: seconds, not ten. The local broker allows it (group.min.session.timeout.ms).
QUICK_FAILOVER = {"IMT_KAFKA_SESSION_TIMEOUT_SECONDS": "3"}


def end(proc: subprocess.Popen[bytes] | None, grace_seconds: float = 20.0) -> None:
    """SIGTERM a process still running, and SIGKILL it if it outlives the grace period."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
