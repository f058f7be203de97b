"""`make run` owns its stack for its lifetime: a second one exits at once rather than stop
the first's services, and a test run leaves its processes alone (stopping one, honcho
would end them all, and `make run` the infrastructure).

run.py is run as a subprocess (never main() in-process: it sets the process's signal
handlers), with every function that would touch a real stack replaced by one that only
records its call in a temporary state folder.
"""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import services
from deploy.local.layout import REPO_ROOT, Layout

RUN_PY = REPO_ROOT / "deploy" / "local" / "run.py"

# run.py as `make run` starts it, but nothing it calls reaches the real stack.
HARNESS = """\
import json, os, runpy, sys
from deploy.local import services, stack
from deploy.local.procs import StackError

calls = os.environ["CALLS"]

def record(name, fail=False):
    def fake(*_args, **_kwargs):
        with open(calls, "a") as handle:
            handle.write(name + "\\n")
        if fail:
            raise StackError(f"fake {name} stops here")
    return fake

services.stop_processes = record("stop_processes")
stack.ensure_up = record("ensure_up", fail=True)
stack.shut_down = record("shut_down")
services.UPSTREAMS = json.loads(os.environ["UPSTREAMS"])
sys.argv = [os.environ["RUN_PY"]]
runpy.run_path(os.environ["RUN_PY"], run_name="__main__")
"""


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.setenv("IMT_STATE_DIR", str(tmp_path / "state"))
    return Layout.from_env()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _make_run(layout: Layout, api_port: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = layout.state.parent / "calls"
    env = {
        **os.environ,
        "IMT_STATE_DIR": str(layout.state),
        "CALLS": str(calls),
        "RUN_PY": str(RUN_PY),
        "UPSTREAMS": json.dumps({"accounts": f"127.0.0.1:{api_port}"}),
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", HARNESS], env=env, capture_output=True, text=True,
        timeout=60, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    return done, calls.read_text().split() if calls.exists() else []


def test_no_make_run_is_seen_where_none_ever_ran(layout: Layout) -> None:
    assert not services.make_run_active(layout)  # not even a state folder
    layout.prepare()
    assert not services.make_run_active(layout)  # a folder, no lock file


def test_a_make_run_is_seen_while_it_holds_its_lock_and_no_longer_after(layout: Layout) -> None:
    claim = services.claim_make_run(layout)
    assert claim is not None
    with claim:
        assert services.make_run_active(layout)
        assert services.make_run_active(layout)  # looking does not take the lock away
    assert not services.make_run_active(layout)


def test_a_second_make_run_exits_at_once_and_stops_nothing(layout: Layout, free_port: int) -> None:
    claim = services.claim_make_run(layout)
    assert claim is not None
    with claim:
        started = time.monotonic()
        done, calls = _make_run(layout, free_port)
    assert done.returncode == 2, done.stderr
    assert "another `make run` is running" in done.stderr
    assert str(layout.state) in done.stderr
    assert calls == []  # neither the first's services nor its infrastructure stopped
    assert time.monotonic() - started < services.CLAIM_SECONDS + 15


def test_the_lock_goes_with_the_make_run_that_held_it(layout: Layout, free_port: int) -> None:
    _make_run(layout, free_port)
    assert not services.make_run_active(layout)
    done, calls = _make_run(layout, free_port)
    assert "fake ensure_up stops here" in done.stderr
    assert calls == ["stop_processes", "ensure_up", "stop_processes", "shut_down"] * 2


def test_a_held_api_port_stops_make_run_before_the_infrastructure_starts(
    layout: Layout, held_port: int
) -> None:
    done, calls = _make_run(layout, held_port)
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{held_port} is already used" in done.stderr
    # The leftovers of a test run go first (they hold the ports); nothing else happens.
    assert calls == ["stop_processes"]


def test_a_test_run_leaves_the_stack_of_a_make_run_up_even_when_asked_to_stop_it(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.infra import stops_stack_after

    monkeypatch.setenv("IMT_TEST_STOP_STACK", "1")
    assert stops_stack_after()
    claim = services.claim_make_run(layout)
    assert claim is not None
    with claim:
        assert not stops_stack_after()
    monkeypatch.delenv("IMT_TEST_STOP_STACK")
    assert not stops_stack_after()


# run.py serving until its terminal closes: with no Procfile entries, it waits (and says
# so) where honcho would run the services.
TERMINAL_HARNESS = """\
import os, runpy, sys
from deploy.local import services, stack

calls = os.environ["CALLS"]

def record(name):
    def fake(*_args, **_kwargs):
        with open(calls, "a") as handle:
            handle.write(name + "\\n")
        return {}
    return fake

services.stop_processes = record("stop_processes")
services.procfile_entries = lambda *_args: {}
stack.ensure_up = record("ensure_up")
stack.shut_down = record("shut_down")
sys.argv = [os.environ["RUN_PY"]]
runpy.run_path(os.environ["RUN_PY"], run_name="__main__")
"""


# A terminal for the harness: it runs run.py on a pseudo-terminal, waits for it to
# serve, closes the terminal as a closed window does, and exits 0 once run.py ended
# (3 if it went on). A program of its own: pytest's process forks nothing.
TERMINAL = """\
import os, pty, select, sys, time
pid, terminal = pty.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-c", os.environ["HARNESS"]])
seen, deadline = b"", time.monotonic() + 60
while b"infrastructure only" not in seen and time.monotonic() < deadline:
    if select.select([terminal], [], [], 0.5)[0]:
        seen += os.read(terminal, 1024)
os.close(terminal)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if os.waitpid(pid, os.WNOHANG)[0] == pid:
        sys.exit(0)
    time.sleep(0.1)
os.kill(pid, 9)
sys.exit(3)
"""


def test_closing_the_terminal_stops_the_services_and_the_infrastructure(layout: Layout) -> None:
    """A closed terminal fails every write (EIO) before its SIGHUP comes: the farewell
    line failed, and nothing was stopped (13 processes, Kafka, PostgreSQL... left up)."""
    calls = layout.state.parent / "calls"
    env = {
        **os.environ,
        "IMT_STATE_DIR": str(layout.state),
        "CALLS": str(calls),
        "RUN_PY": str(RUN_PY),
        "PYTHONPATH": str(REPO_ROOT),
        "HARNESS": TERMINAL_HARNESS,
    }
    done = subprocess.run(
        [sys.executable, "-c", TERMINAL], env=env, capture_output=True, text=True,
        timeout=180, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, "run.py went on after its terminal closed"
    assert calls.read_text().split() == [
        "stop_processes",
        "ensure_up",
        "stop_processes",
        "shut_down",
    ]
