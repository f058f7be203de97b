"""Commands that reach the stack outside the service processes (make backup, restore,
audit-verify, bench) find it where IMT_KAFKA_PORT, IMT_PG_PORT and the like moved it, as
the service processes do: not at the default ports, another user's stack on a shared
machine."""

import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from deploy.local import services, stack
from deploy.local.layout import REPO_ROOT, Layout

# A stack moved off the default ports (19092, 55432).
MOVED = {"IMT_KAFKA_PORT": "29092", "IMT_PG_PORT": "55555"}

SETTINGS_SEEN = """\
from services.accounts.config import AccountsSettings
from services.deletion.config import DeletionSettings
for settings in (DeletionSettings(), AccountsSettings()):
    print(settings.kafka_bootstrap, settings.postgres_port)
"""


@pytest.fixture
def moved_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a user whose stack is moved: the stack's own variables only
    (the test run's conftest set the services' ones, from the default ports)."""
    for name in services.stack_env(Layout.from_env()):
        monkeypatch.setenv(name, "")  # so that the variable is restored after the test
        monkeypatch.delenv(name)
    for name, value in MOVED.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("moved_stack")
def test_a_command_run_on_the_stack_finds_it_where_its_ports_moved_it() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "local" / "on_stack.py"),
         sys.executable, "-c", SETTINGS_SEEN],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["127.0.0.1:29092 55555"] * 2


@pytest.mark.parametrize("target", ["backup", "restore", "audit-verify"])
def test_the_make_targets_that_reach_the_stack_run_on_it(target: str) -> None:
    make = shutil.which("make")
    assert make is not None, "make runs every test run (make test): it is here"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        [make, "-n", "-s", "-C", str(REPO_ROOT), target],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if " -m services." in line]
    assert commands, done.stdout
    for command in commands:
        assert command.startswith(".venv/bin/python deploy/local/on_stack.py "), command


class _Built(Exception):
    """Raised where the benchmarks would start, with the settings they were given."""


@pytest.mark.usefixtures("moved_stack")
def test_the_benchmarks_find_the_stack_where_its_ports_moved_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bench.__main__ as bench_main

    def built(settings: Any, **_kwargs: Any) -> None:
        raise _Built(settings)

    monkeypatch.setattr(stack, "ensure_up", lambda *_args, **_kwargs: {})
    monkeypatch.setattr(bench_main, "BenchContext", built)
    with pytest.raises(_Built) as raised:
        bench_main.main(["--only", "bus"])
    [settings] = raised.value.args
    assert (settings.kafka_bootstrap, settings.postgres_port) == ("127.0.0.1:29092", 55555)
    assert os.environ["IMT_POSTGRES_PORT"] == "55555"  # for the processes they start too
