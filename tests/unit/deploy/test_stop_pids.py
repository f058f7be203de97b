"""Stopping several processes signals them all before waiting for any: their graceful
stops overlap (the services' ~13 processes stop in about the time of the slowest)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from deploy.local import procs

# On SIGTERM: say so, then wait (up to 5 s) for the peer to have been told too. Told one
# after the other, the first would wait for the second in vain and exit 7.
PEER = """
import os, signal, sys, time
me, peer = sys.argv[1], sys.argv[2]
def stop(*_):
    open(me + ".term", "w").close()
    deadline = time.monotonic() + 5
    while not os.path.exists(peer + ".term"):
        if time.monotonic() > deadline:
            sys.exit(7)
        time.sleep(0.02)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(me + ".ready", "w").close()
while True:
    time.sleep(1)
"""


def test_every_process_is_told_to_stop_before_any_is_waited_for(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    peers = [
        subprocess.Popen([sys.executable, "-c", PEER, me, peer]) for me, peer in ((a, b), (b, a))
    ]
    try:
        deadline = time.monotonic() + 30
        while not all(Path(f"{me}.ready").exists() for me in (a, b)):
            assert time.monotonic() < deadline, "the peers did not start"
            time.sleep(0.02)
        procs.stop_pids([p.pid for p in peers])
        assert [p.wait(timeout=10) for p in peers] == [0, 0]
    finally:
        for p in peers:
            p.kill()
            p.wait()


def test_one_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
         "; open(__import__('sys').argv[1], 'w').close(); time.sleep(60)", str(tmp_path / "up")]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "up").exists():
            assert time.monotonic() < deadline, "it did not start"
            time.sleep(0.02)
        procs.stop_pids([stubborn.pid], timeout=0.5)
        assert stubborn.wait(timeout=10) == -9
    finally:
        stubborn.kill()
        stubborn.wait()
