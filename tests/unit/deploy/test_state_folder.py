"""The local stack's state lives in shared /tmp: nothing another local user put there is
trusted, and no secret is ever readable by others or written through a planted link."""

import os
import secrets
import stat
from pathlib import Path

import pytest

from deploy.local import postgres, procs, stack
from deploy.local.errors import StackError
from deploy.local.layout import Layout, Ports, private_mode, unsafe_reason
from deploy.local.tls import ensure_certificates


def _layout(state: Path) -> Layout:
    return Layout(state=state, cache=state.parent / "cache", ports=Ports.from_env())


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_state_folder_is_open_to_nobody_else(tmp_path: Path) -> None:
    state = tmp_path / "imt-privacy"
    _layout(state).prepare()
    assert _mode(state) == private_mode(os.geteuid())
    assert _mode(state) & 0o066 == 0  # others may at most traverse it (root: postgres)
    assert all((state / name).is_dir() for name in ("logs", "run", "tls"))


def test_only_root_keeps_the_search_bit_its_daemons_users_need() -> None:
    assert private_mode(0) == 0o711
    assert private_mode(1000) == 0o700


def test_a_reused_state_folder_of_ours_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "imt-privacy"
    state.mkdir(mode=0o755)
    state.chmod(0o755)  # what earlier versions left
    _layout(state).prepare()
    assert _mode(state) == private_mode(os.geteuid())


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_a_state_folder_others_can_write_into_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "imt-privacy"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(StackError, match="writable by others") as refused:
        _layout(state).prepare()
    assert str(state) in str(refused.value)
    assert "IMT_STATE_DIR" in str(refused.value)
    assert not (state / "tls").exists()


def test_a_link_at_the_state_path_is_refused_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "imt-privacy"
    link.symlink_to(target)
    monkeypatch.setenv("IMT_STATE_DIR", str(link))
    state = Layout.from_env()
    assert state.state == link  # not resolved to the target
    with pytest.raises(StackError, match="symbolic link"):
        state.prepare()
    assert list(target.iterdir()) == []


def test_a_state_folder_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "imt-privacy"
    state.mkdir(mode=0o700)
    owner = os.lstat(state).st_uid
    assert "owned by uid" in str(unsafe_reason(os.lstat(state), owner + 1))
    assert unsafe_reason(os.lstat(state), owner) is None
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(StackError, match=f"owned by uid {owner}"):
        _layout(state).prepare()


def test_a_planted_tls_folder_is_refused_before_its_key_is_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "server-key.pem").write_text("someone else's key")
    with pytest.raises(StackError, match="writable by others"):
        ensure_certificates(folder)


def test_a_folder_made_under_umask_0002_is_tightened_not_refused(tmp_path: Path) -> None:
    # Ubuntu and Fedora give users umask 0002 and a group of their own.
    state = tmp_path / "imt-privacy"
    state.mkdir()
    state.chmod(0o775)
    (state / "logs").mkdir()
    (state / "logs").chmod(0o775)
    _layout(state).prepare()
    assert _mode(state) == private_mode(os.geteuid())
    assert _mode(state / "logs") == 0o755
    # A new one is the root's mode: under root, PostgreSQL must reach its log in it.
    assert _mode(state / "tls") == private_mode(os.geteuid())


def test_down_refuses_a_state_folder_that_is_not_ours(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (target / "run").mkdir(parents=True)
    link = tmp_path / "imt-privacy"
    link.symlink_to(target)
    with pytest.raises(StackError, match="symbolic link"):
        stack.shut_down(layout=_layout(link))
    assert list((target / "run").iterdir()) == []  # no lock file made through the link


def test_the_private_key_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str | Path, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        created.append((Path(path).name, flags, mode))
        return real_open(path, flags, mode)

    folder = tmp_path / "tls"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(os, "open", spy)
    files = ensure_certificates(folder)
    monkeypatch.undo()
    assert _mode(files.key) == 0o600
    assert _mode(files.cert) == 0o644  # nginx's workers read the chain
    key_temps = [c for c in created if c[0].startswith(".server-key.pem.")]
    assert len(key_temps) == 1
    _, flags, mode = key_temps[0]
    assert mode == 0o600  # at creation, before any byte of the key is written
    assert flags & os.O_EXCL
    assert flags & os.O_NOFOLLOW
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]


def test_a_link_planted_at_a_temporary_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "key.pem"
    # The name earlier versions used, and (forced) the random one: both are refused.
    (tmp_path / ".key.pem.tmp").symlink_to(victim)
    (tmp_path / ".key.pem.guessed.tmp").symlink_to(victim)
    assert procs.write_atomic(target, "secret", mode=0o600)
    assert victim.read_text() == "precious"
    monkeypatch.setattr(secrets, "token_hex", lambda _n: "guessed")
    with pytest.raises(FileExistsError):
        procs.write_atomic(target, "other secret", mode=0o600)
    assert victim.read_text() == "precious"
    assert target.read_text() == "secret"


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        procs.write_atomic(tmp_path / "file", "text")
    assert list(tmp_path.iterdir()) == []


def test_a_replaced_link_is_itself_replaced_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "server.pem"
    path.symlink_to(victim)
    assert procs.write_atomic(path, "cert")
    assert not path.is_symlink()
    assert (path.read_text(), victim.read_text()) == ("cert", "precious")


def test_postgres_include_is_not_appended_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    conf = tmp_path / "postgresql.conf"
    conf.symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):  # O_NOFOLLOW
        postgres._append_include(conf)
    assert victim.read_text() == "precious"


# The default state folder, written out: a test holding it misses a stack moved with
# IMT_STATE_DIR (its CA, its logs), or finds another user's in /tmp.
DEFAULT_STATE = "/tmp/imt-privacy"


def test_no_test_looks_for_the_stack_at_the_default_state_folder() -> None:
    tests = Path(__file__).resolve().parents[2]
    holding = sorted(
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if path != Path(__file__).resolve() and DEFAULT_STATE in path.read_text()
    )
    assert holding == [], "use Layout.from_env() (and tls_files for the CA) instead"
