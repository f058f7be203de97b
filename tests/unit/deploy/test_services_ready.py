"""The test run waits for each API's readiness on the API's own port: the gateway hides it."""

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.local import procs, services
from deploy.local.layout import Layout


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/accounts/readyz" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def api_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_readiness_is_asked_of_the_api_itself(
    api_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "UPSTREAMS", {"accounts": f"127.0.0.1:{api_port}"})
    assert services.api_ready("accounts")


def test_an_api_that_does_not_answer_is_not_ready(
    api_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "UPSTREAMS", {"accounts": "127.0.0.1:9"})  # discard port
    assert not services.api_ready("accounts")


def test_a_process_make_run_starts_is_found_by_its_pid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Honcho writes no pid files: each Procfile line writes its own, so `make stop` and
    a test run find the services `make run` started (honcho may have died before them)."""
    monkeypatch.setenv("IMT_STATE_DIR", str(tmp_path))
    layout = Layout.from_env()
    layout.run.mkdir(parents=True)
    command = f"{sys.executable} -c 'import time; time.sleep(60)' honcho-demo-marker"
    [line] = services.honcho_procfile(layout, {"demo-worker": command}).splitlines()
    name, _, shell = line.partition(": ")
    assert name == "demo-worker"
    proc = subprocess.Popen(["/bin/sh", "-c", shell])
    try:
        pidfile = layout.pidfile("svc-demo-worker")
        deadline = time.monotonic() + 10
        while procs.our_pid(pidfile, "honcho-demo-marker") is None:
            assert time.monotonic() < deadline, "the line wrote no pid file of its process"
            time.sleep(0.05)
        assert procs.our_pid(pidfile, "honcho-demo-marker") == proc.pid  # exec kept it
    finally:
        proc.kill()
        proc.wait()


# A service that says it started, and says it stops when told to (SIGTERM).
TALKING_SERVICE = """\
import os, signal, sys, time
def stop(*_args):
    print("stopping", file=sys.stderr, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("started", os.getpid(), flush=True)
time.sleep(60)
"""


def _logged_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Layout, str]:
    """A state folder, and the shell line `make run` hands honcho for a talking service."""
    monkeypatch.setenv("IMT_STATE_DIR", str(tmp_path))
    layout = Layout.from_env()
    layout.prepare()
    script = tmp_path / "talking_service.py"
    script.write_text(TALKING_SERVICE)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    [line] = services.honcho_procfile(layout, {"demo-api": command}).splitlines()
    return layout, line.partition(": ")[2]


def _as_honcho_starts(shell: str) -> subprocess.Popen[bytes]:
    # Its own session, its output read from a pipe.
    return subprocess.Popen(
        ["/bin/sh", "-c", shell], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def test_make_run_writes_each_process_log_where_the_runbook_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md sends operators to logs/<process>.log: under `make run` the
    output went to the terminal only. It goes to both, up to the service's last line
    after honcho's SIGTERM to its process group, and the pid file still names it."""
    layout, shell = _logged_demo(tmp_path, monkeypatch)
    with _as_honcho_starts(shell) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().decode()
            assert first == f"started {proc.pid}\n"  # exec kept the shell's pid
            os.killpg(proc.pid, signal.SIGTERM)  # honcho's stop
            rest = proc.stdout.read().decode()  # until tee, the last writer, ends
        finally:
            proc.kill()
    assert rest == "stopping\n"
    assert layout.log("demo-api").read_text() == first + rest
    assert procs.read_pid(layout.pidfile("svc-demo-api")) == proc.pid


def test_a_process_whose_honcho_died_still_logs_its_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed terminal ends honcho first; run.py then stops the services."""
    layout, shell = _logged_demo(tmp_path, monkeypatch)
    with _as_honcho_starts(shell) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().decode() == f"started {proc.pid}\n"
            proc.stdout.close()  # honcho gone
            os.kill(proc.pid, signal.SIGTERM)  # run.py's stop, the service's pid alone
            proc.wait(timeout=10)
        finally:
            proc.kill()
    deadline = time.monotonic() + 10
    while "stopping" not in layout.log("demo-api").read_text():
        assert time.monotonic() < deadline, layout.log("demo-api").read_text()
        time.sleep(0.05)


# An API that dies at start (an import error, a port held) fails the wait at once, with
# its exit code and its log, rather than after READY_TIMEOUT.

DYING_API = """\
import sys, time
time.sleep(0.3)
print("ModuleNotFoundError: No module named 'nowhere'", flush=True)
sys.exit(3)
"""


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.setenv("IMT_STATE_DIR", str(tmp_path / "state"))
    layout = Layout.from_env()
    layout.prepare()
    return layout


def test_an_api_whose_process_died_fails_the_wait_at_once_with_its_exit_code_and_log(
    state: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "dying_api.py"
    script.write_text(DYING_API)
    monkeypatch.setattr(services, "procfile_entries", lambda: {"accounts-api": f"python {script}"})
    monkeypatch.setattr(services, "UPSTREAMS", {"accounts": "127.0.0.1:9"})  # nothing answers
    monkeypatch.setattr(services, "READY_TIMEOUT", 30.0)
    assert services.ensure_processes(["accounts-api"], state) == ["accounts-api"]
    started = time.monotonic()
    with pytest.raises(procs.StackError) as failed:
        services.wait_for_apis(["accounts"], state)
    assert time.monotonic() - started < 10
    assert "exited with code 3" in str(failed.value)
    assert "No module named 'nowhere'" in str(failed.value)


def test_the_exit_code_of_a_watched_daemon_is_recorded_and_its_pid_is_its_own(
    tmp_path: Path,
) -> None:
    exit_file = tmp_path / "svc.exit"
    argv = ["/bin/sh", "-c", "exec sleep 30"]
    pid = procs.spawn(argv, tmp_path / "svc.log", tmp_path / "svc.pid", exit_file=exit_file)
    try:
        assert procs.read_pid(tmp_path / "svc.pid") == pid
        assert os.getpgid(pid) == pid  # its own process group, as without the watcher
        assert procs.exit_code(exit_file, pid) is None  # still running
    finally:
        procs.stop_pid(pid)
    deadline = time.monotonic() + 10
    while procs.exit_code(exit_file, pid) is None:
        assert time.monotonic() < deadline, "no exit code recorded"
        time.sleep(0.05)
    assert procs.exit_code(exit_file, pid) == -15  # SIGTERM
    assert procs.exit_code(exit_file, pid + 1) is None  # another process's: not this one
