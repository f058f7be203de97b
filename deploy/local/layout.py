"""Where the local stack keeps its state and which loopback ports it uses."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from deploy.local.errors import StackError

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def _port(default: int, *names: str) -> int:
    for name in names:
        value = os.environ.get(name)
        if value:
            return int(value)
    return default


@dataclass(frozen=True)
class Ports:
    """Loopback ports of every daemon; each one can be moved by an IMT_* variable."""

    kafka: int
    kafka_controller: int
    kafka_tls: int
    postgres: int
    smtp: int
    smtp_web: int
    gateway: int
    gateway_tls: int
    prometheus: int

    @classmethod
    def from_env(cls) -> Ports:
        return cls(
            kafka=_port(19092, "IMT_KAFKA_PORT"),
            kafka_controller=_port(19093, "IMT_KAFKA_CONTROLLER_PORT"),
            kafka_tls=_port(19094, "IMT_KAFKA_TLS_PORT"),
            # IMT_POSTGRES_PORT is what services read, so honour it too.
            postgres=_port(55432, "IMT_PG_PORT", "IMT_POSTGRES_PORT"),
            smtp=_port(2525, "IMT_SMTP_PORT"),
            smtp_web=_port(8025, "IMT_SMTP_WEB_PORT"),
            gateway=_port(8080, "IMT_GATEWAY_PORT"),
            gateway_tls=_port(8443, "IMT_GATEWAY_TLS_PORT"),
            prometheus=_port(9090, "IMT_PROMETHEUS_PORT"),
        )


@dataclass(frozen=True)
class Layout:
    """Paths and ports of one local stack."""

    state: Path
    cache: Path
    ports: Ports

    @classmethod
    def from_env(cls) -> Layout:
        # Outside the repo: the postgres OS user must traverse it and CI clones anywhere.
        state = os.environ.get("IMT_STATE_DIR", "/tmp/imt-privacy")  # noqa: S108
        cache = Path(os.environ.get("IMT_CACHE_DIR", str(Path.home() / ".cache" / "imt-privacy")))
        # Absolute but not resolved: a symbolic link planted at the state path must reach
        # prepare(), which refuses it, rather than be followed to wherever it points.
        return cls(state=Path(os.path.abspath(state)), cache=cache, ports=Ports.from_env())

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def tls(self) -> Path:
        return self.state / "tls"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def prepare(self) -> None:
        """Create the state folders, or reuse them once they prove to be ours alone."""
        self.state.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.state.mkdir(mode=0o700)
        require_private(self.state)
        self.state.chmod(private_mode(os.geteuid()))
        for folder in (self.logs, self.run, self.tls):
            # PostgreSQL (as postgres) appends to its log in logs/ and reads its files in
            # tls/: under root they keep the search bit for others, as the root does.
            try:
                folder.mkdir()
                mode = private_mode(os.geteuid())  # exact, whatever the umask
            except FileExistsError:
                mode = stat.S_IMODE(os.lstat(folder).st_mode) & ~0o022
            require_private(folder)
            folder.chmod(mode)


def private_mode(euid: int) -> int:
    """Mode of the state root: nobody but its owner lists it or creates anything in it.

    Under root, PostgreSQL (OS user postgres) and nginx's workers (www-data) must still
    reach their files inside: root's folder keeps the search bit for others (0711), which
    opens a path one knows but lists, creates and renames nothing.
    """
    return 0o711 if euid == 0 else 0o700


def unsafe_reason(info: os.stat_result, euid: int) -> str | None:
    """Why a folder (its lstat) may hold what another local user put there; None if ours."""
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "not a folder"
    if info.st_uid != euid:
        return f"owned by uid {info.st_uid}, not by us (uid {euid})"
    # Group-writable is what a umask of 0002 makes (Ubuntu, Fedora: the group is the
    # user's own): tightened by prepare(), not refused. Writable by anyone is refused.
    if info.st_mode & stat.S_IWOTH:
        return f"writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def require_private(folder: Path) -> None:
    """Refuse a state folder another local user could have made or written into.

    /tmp is shared: anyone may create /tmp/imt-privacy first, with their own CA and key
    in tls/, or links that would make us (often root) write over any file.
    """
    reason = unsafe_reason(os.lstat(folder), os.geteuid())
    if reason:
        raise StackError(
            f"refusing state folder {folder}: it is {reason}, so another local user may "
            f"have put keys, certificates or links in it. Inspect and delete it "
            f"(rm -rf {folder}), or use another folder with IMT_STATE_DIR=<path>"
        )
