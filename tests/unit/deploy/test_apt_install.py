"""apt-get installs never start the packages' own daemons (the system Prometheus on
0.0.0.0:9090, nginx's default site on :80): Debian's policy-rc.d forbids it meanwhile."""

import subprocess
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
