"""apt-get installs never start the packages' own daemons (the system Prometheus on
0.0.0.0:9090, nginx's default site on :80): Debian's policy-rc.d forbids it meanwhile."""

import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from deploy.local import procs


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "policy-rc.d"
    monkeypatch.setattr(procs, "POLICY_RC_D", path)
    return path


def _verdict(policy: Path) -> int:
    # invoke-rc.d runs it as "policy-rc.d <service> <action>"; 101 means "forbidden".
    return subprocess.run([str(policy), "prometheus", "start"], check=False).returncode


def test_while_installing_every_daemon_start_is_forbidden_then_the_policy_goes(
    policy: Path,
) -> None:
    with procs.no_daemon_starts():
        assert _verdict(policy) == 101
        assert policy.stat().st_mode & 0o777 == 0o755
    assert not policy.exists()


def test_a_policy_already_in_place_is_kept_as_it_is(policy: Path) -> None:
    policy.write_text("#!/bin/sh\nexit 0\n")
    with procs.no_daemon_starts():
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_a_policy_left_by_a_killed_run_of_ours_goes_after_the_next_install(
    policy: Path,
) -> None:
    with procs.no_daemon_starts():
        pass
    policy.write_text(procs._FORBID_STARTS)  # what a run killed mid-install leaves
    policy.chmod(0o755)
    with procs.no_daemon_starts():
        assert _verdict(policy) == 101  # still forbidding during this install
    assert not policy.exists()


def test_the_policy_goes_even_when_the_install_fails(policy: Path) -> None:
    with pytest.raises(procs.StackError), procs.no_daemon_starts():
        raise procs.StackError("apt-get install failed")
    assert not policy.exists()


def test_every_apt_get_run_happens_under_the_policy(
    policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []

    def fake_run(argv: Sequence[str], what: str, **_kwargs: object) -> str:
        seen.append((argv[-1], policy.exists() and _verdict(policy) == 101))
        return ""

    monkeypatch.setattr(procs, "is_root", lambda: True)
    monkeypatch.setattr(procs, "run", fake_run)
    monkeypatch.setattr(procs, "_APT_UPDATED", [])
    monkeypatch.setattr(procs, "SYSTEMD_RUNNING", policy.parent / "no-systemd")
    procs.apt_install(["prometheus"], "Prometheus")
    assert seen == [("update", True), ("prometheus", True)]
    assert not policy.exists()


def test_make_test_installs_only_the_missing_packages_in_one_apt_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploy.local import stack

    found = {"postgresql": "/usr/lib/postgresql/16/bin", "nginx": None}
    finders = {name: (lambda name=name: found.get(name)) for name in stack.PACKAGES}
    monkeypatch.setattr(stack, "PACKAGES", finders)
    runs: list[list[str]] = []
    monkeypatch.setattr(procs, "apt_install", lambda packages, what: runs.append(list(packages)))

    assert stack.install_missing() == ["nginx", "prometheus", "chromium"]
    assert runs == [["nginx", "prometheus", "chromium"]]

    found.update(nginx="/usr/sbin/nginx", prometheus="/usr/bin/prometheus", chromium="/x")
    assert stack.install_missing() == []
    assert len(runs) == 1  # nothing missing: apt-get is not run at all


def test_the_test_run_installs_every_package_before_pytest_starts() -> None:
    makefile = Path(__file__).resolve().parents[3] / "Makefile"
    recipe = makefile.read_text().split("\ntest: setup\n", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines()]
    install = steps.index("$(STACK) install")
    assert install < next(i for i, step in enumerate(steps) if "-m pytest" in step)


def test_a_user_who_is_not_root_is_told_what_is_missing_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy.local import stack

    monkeypatch.setattr(stack, "PACKAGES", {"chromium": lambda: None, "nginx": lambda: "/x"})
    monkeypatch.setattr(procs, "is_root", lambda: False)
    runs: list[Sequence[str]] = []
    monkeypatch.setattr(procs, "apt_install", lambda packages, what: runs.append(packages))

    # Not main(): it sets the process's log levels, which later tests' captures rely on.
    stack._install_or_warn()
    assert runs == []
    assert "chromium missing; as root: apt-get install" in capsys.readouterr().err


# After the install: what its postinst enabled at boot (nginx on 0.0.0.0:80, the system's
# Prometheus on 0.0.0.0:9090) is disabled where systemd runs.


@pytest.fixture
def apt_runs(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[list[str]], Path]:
    """apt_install as root with a fake run (its argv recorded), a fake systemctl on PATH,
    and a folder standing for /run/systemd/system (absent until the test makes it)."""
    runs: list[list[str]] = []

    def fake_run(argv: Sequence[str], what: str, **_kwargs: object) -> str:
        runs.append(list(argv))
        if argv[0] == "systemctl" and (tmp_path / "systemctl-fails").exists():
            raise procs.StackError(f"{what} failed (exit 1): Failed to disable unit")
        return ""

    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "systemctl").write_text("#!/bin/sh\nexit 0\n")
    (fakes / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(fakes))
    monkeypatch.setattr(procs, "is_root", lambda: True)
    monkeypatch.setattr(procs, "run", fake_run)
    monkeypatch.setattr(procs, "_APT_UPDATED", [True])
    systemd = tmp_path / "run-systemd-system"
    monkeypatch.setattr(procs, "SYSTEMD_RUNNING", systemd)
    return runs, systemd


def _systemctl(runs: list[list[str]]) -> list[list[str]]:
    return [argv for argv in runs if argv[0] == "systemctl"]


def test_under_systemd_the_installed_daemons_we_run_ourselves_are_disabled_at_boot(
    apt_runs: tuple[list[list[str]], Path],
) -> None:
    runs, systemd = apt_runs
    systemd.mkdir()
    procs.apt_install(["postgresql", "nginx", "prometheus", "chromium"], "all")
    assert runs[-1] == ["systemctl", "disable", "nginx", "prometheus"]
    assert len(_systemctl(runs)) == 1


def test_only_the_packages_installed_are_disabled(
    apt_runs: tuple[list[list[str]], Path],
) -> None:
    runs, systemd = apt_runs
    systemd.mkdir()
    procs.apt_install(["prometheus"], "Prometheus")
    assert _systemctl(runs) == [["systemctl", "disable", "prometheus"]]
    runs.clear()
    procs.apt_install(["postgresql", "chromium"], "PostgreSQL, Chromium")
    assert _systemctl(runs) == []


def test_without_systemd_nothing_is_disabled(apt_runs: tuple[list[list[str]], Path]) -> None:
    runs, _systemd = apt_runs  # /run/systemd/system absent: a container, say
    procs.apt_install(["nginx", "prometheus"], "nginx, Prometheus")
    assert _systemctl(runs) == []


def test_a_failed_disable_is_a_warning_not_a_failed_install(
    apt_runs: tuple[list[list[str]], Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs, systemd = apt_runs
    systemd.mkdir()
    (tmp_path / "systemctl-fails").touch()
    procs.apt_install(["nginx"], "nginx")
    assert _systemctl(runs) == [["systemctl", "disable", "nginx"]]
    assert "Failed to disable unit" in caplog.text


# Ctrl-C during a first start: a thread waiting for another's install must not go on to
# install (and start) once the start was interrupted.


def test_an_interrupted_start_installs_nothing_more(
    apt_runs: tuple[list[list[str]], Path],
) -> None:
    runs, _systemd = apt_runs
    procs.CANCEL.set()
    try:
        with pytest.raises(procs.Cancelled, match="interrupted"):
            procs.apt_install(["nginx"], "nginx")
    finally:
        procs.CANCEL.clear()
    assert runs == []


def test_an_install_waiting_for_another_stops_once_the_start_is_interrupted(
    apt_runs: tuple[list[list[str]], Path],
) -> None:
    runs, _systemd = apt_runs
    outcome: list[BaseException | None] = []

    def install() -> None:
        try:
            procs.apt_install(["prometheus"], "Prometheus")
            outcome.append(None)
        except procs.StackError as exc:
            outcome.append(exc)

    procs._APT.acquire()  # another thread's install is running
    waiting = threading.Thread(target=install)
    try:
        waiting.start()
        time.sleep(0.2)
        procs.CANCEL.set()  # Ctrl-C: the other's apt-get ended
    finally:
        procs._APT.release()
        waiting.join(10)
        procs.CANCEL.clear()
    assert len(outcome) == 1
    assert isinstance(outcome[0], procs.Cancelled)
    assert runs == []
