"""Ending the real processes that crash tests start and kill."""

from __future__ import annotations

import subprocess


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
