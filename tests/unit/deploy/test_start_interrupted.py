"""Ctrl-C during a start: the components' threads start nothing more, and the start
returns only once they have ended, so that the caller's stop finds every daemon that
did start. Fake components start `sleep` daemons in a temporary state folder."""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.local import procs, stack
from deploy.local.layout import Layout, Ports

NAMES = ("first", "second")


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layout]:
    layout = Layout(state=tmp_path / "state", cache=tmp_path / "cache", ports=Ports.from_env())
    monkeypatch.setattr(stack, "ensure_certificates", lambda _tls: None)
    yield layout
    for name in NAMES:  # whatever a component started, however the test went
        pid = procs.read_pid(layout.pidfile(name))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _daemon(layout: Layout, name: str) -> str:
    procs.spawn(["sleep", "30"], layout.log(name), layout.pidfile(name))
    return name


def _components(monkeypatch: pytest.MonkeyPatch, ended: list[str]) -> None:
    both_running = threading.Barrier(2, timeout=10)

    def first(layout: Layout) -> str:
        try:
            both_running.wait()
            # Ctrl-C arrives while the main thread waits for the components ...
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            time.sleep(0.5)  # ... and this one was still installing, say
            return _daemon(layout, "first")
        finally:
            ended.append("first")

    def second(layout: Layout) -> str:
        try:
            both_running.wait()
            assert procs.wait_for(lambda: False, 0.7, lambda: True) is False
            return _daemon(layout, "second")
        finally:
            ended.append("second")

    def down(_layout: Layout, _wipe: bool) -> None:
        pass

    def status(_layout: Layout) -> tuple[bool, str]:
        return False, "stopped"

    monkeypatch.setattr(
        stack, "COMPONENTS", {"first": stack.Component(first, down, status),
                              "second": stack.Component(second, down, status)},
    )  # fmt: skip


def test_an_interrupted_start_starts_nothing_after_and_waits_for_its_threads(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[str] = []
    _components(monkeypatch, ended)
    with pytest.raises(KeyboardInterrupt):
        stack.ensure_up(NAMES, layout)
    assert sorted(ended) == sorted(NAMES)  # returned once both threads had ended
    time.sleep(1.0)  # a thread left running would start its daemon about now
    assert [name for name in NAMES if layout.pidfile(name).exists()] == []
    assert not procs.CANCEL.is_set()  # the caller's stop (and the next start) may run


def test_after_an_interrupted_start_the_next_one_starts_as_usual(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    _components(monkeypatch, [])
    with pytest.raises(KeyboardInterrupt):
        stack.ensure_up(NAMES, layout)

    def up(name: str) -> Callable[[Layout], str]:
        return lambda layout: _daemon(layout, name)

    def down(_layout: Layout, _wipe: bool) -> None:
        pass

    def status(_layout: Layout) -> tuple[bool, str]:
        return True, ""

    components = {name: stack.Component(up(name), down, status) for name in NAMES}
    monkeypatch.setattr(stack, "COMPONENTS", components)
    assert stack.ensure_up(NAMES, layout) == {"first": "first", "second": "second"}
    assert all(procs.read_pid(layout.pidfile(name)) for name in NAMES)


def test_once_interrupted_no_command_runs_and_no_daemon_starts(tmp_path: Path) -> None:
    procs.CANCEL.set()
    try:
        with pytest.raises(procs.Cancelled):
            procs.spawn(["sleep", "30"], tmp_path / "x.log", tmp_path / "x.pid")
        with pytest.raises(procs.Cancelled):
            procs.run(["touch", str(tmp_path / "ran")], "touch")
        with pytest.raises(procs.Cancelled):
            procs.wait_for(lambda: False, 60, lambda: True)
    finally:
        procs.CANCEL.clear()
    assert not (tmp_path / "x.pid").exists()
    assert not (tmp_path / "ran").exists()
