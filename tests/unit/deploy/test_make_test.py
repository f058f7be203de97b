"""`make test` (CI's `.ci/run`) leaves nothing running when asked to stop the stack
(IMT_TEST_STOP_STACK=1), however the run ended: pytest stops the stack at its session's
end, which a collection error or a start that failed half-way never reach.

The Makefile runs in a scratch folder with a fake interpreter that records its calls:
nothing starts, and the repository's .venv is not touched."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.local import services, stack
from deploy.local.layout import Layout
from tests.support import infra

MAKEFILE = Path(__file__).resolve().parents[3] / "Makefile"

# The venv's python: records its arguments, fails where the test says.
FAKE_PYTHON = """\
#!/bin/sh
echo "$*" >> "$CALLS"
case "$*" in
  *"stack.py up"*) exit "$UP_EXIT" ;;
  *"-m pytest"*) exit "$PYTEST_EXIT" ;;
  *"promises"*) exit "$PROMISES_EXIT" ;;
esac
exit 0
"""

STOP = "-m tests.support.infra stop-if-asked"


def _make_test(
    tmp_path: Path, up: int = 0, pytest_exit: int = 0, promises_exit: int = 0
) -> tuple[int, list[str]]:
    make = shutil.which("make")
    assert make is not None, "make runs every test run (make test): it is here"
    for name in ("uv.lock", "pyproject.toml"):
        (tmp_path / name).write_text("")
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    synced = venv / ".synced"
    synced.write_text("")
    later = (tmp_path / "uv.lock").stat().st_mtime + 10
    os.utime(synced, (later, later))  # the venv is current: nothing to install
    calls = tmp_path / "calls"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        [make, "-s", "-C", str(tmp_path), "-f", str(MAKEFILE), "test"],
        env={**env, "CALLS": str(calls), "UP_EXIT": str(up), "PYTEST_EXIT": str(pytest_exit),
             "PROMISES_EXIT": str(promises_exit)},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return done.returncode, calls.read_text().splitlines()


def test_a_collection_error_still_stops_the_stack_and_fails(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path, pytest_exit=2)
    assert code != 0
    assert [c for c in calls if "pytest" in c or "infra" in c] == ["-m pytest --durations=15", STOP]
    assert not any("promises" in c for c in calls)


def test_a_stack_that_failed_to_start_is_stopped_and_no_test_runs(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path, up=2)
    assert code != 0
    assert calls[-1] == STOP
    assert not any("pytest" in c for c in calls)


def test_a_passing_run_stops_the_stack_then_prints_the_promises(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path)
    assert code == 0
    assert calls[-2:] == [STOP, "tools/promises.py"]


def test_a_run_with_failed_tests_prints_the_promises_too_and_fails(tmp_path: Path) -> None:
    """The table is where a failure shows which promise it breaks."""
    code, calls = _make_test(tmp_path, pytest_exit=1)
    assert code != 0  # make answers 2 for a failed recipe
    assert calls[-2:] == [STOP, "tools/promises.py"]


def test_a_promise_not_proved_fails_a_run_whose_tests_passed(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path, promises_exit=1)
    assert code != 0  # make answers 2 for a failed recipe
    assert calls[-1] == "tools/promises.py"


@pytest.mark.parametrize(("asked", "make_run", "stopped"), [
    ("1", False, True),
    ("", False, False),
    ("1", True, False),  # a `make run` holds it: its services would lose Kafka and PostgreSQL
])  # fmt: skip
def test_the_stack_is_stopped_after_a_run_only_when_asked_and_not_make_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: str, make_run: bool, stopped: bool
) -> None:
    monkeypatch.setenv("IMT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IMT_TEST_STOP_STACK", asked)
    calls: list[str] = []
    monkeypatch.setattr(stack, "shut_down", lambda *_args, **_kwargs: calls.append("shut_down"))
    claim = services.claim_make_run(Layout.from_env()) if make_run else None
    try:
        assert infra.stop_if_asked() is stopped
    finally:
        if claim is not None:
            claim.close()
    assert calls == (["shut_down"] if stopped else [])
