"""Where the local stack keeps its state and which loopback ports it uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
        state = Path(os.environ.get("IMT_STATE_DIR", "/tmp/imt-privacy"))  # noqa: S108
        cache = Path(os.environ.get("IMT_CACHE_DIR", str(Path.home() / ".cache" / "imt-privacy")))
        return cls(state=state.resolve(), cache=cache, ports=Ports.from_env())

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
        """Create the state folders, traversable by other OS users (postgres, nginx)."""
        for folder in (self.state, self.logs, self.run, self.tls):
            folder.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)
