"""Settings every service shares, read once from the environment (prefix ``IMT_``).

Each service subclasses :class:`PlatformSettings` in its own ``config.py`` and reads it
once in its ``bootstrap``; nothing reads the environment at import time.

Every field carries a description: ``make docs`` turns them into docs/configuration.md.
Secrets have development defaults so that ``make run`` works on a fresh clone; outside
``development`` and ``test`` those defaults are refused at start-up.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

DEV_MASTER_KEY = "ZGV2LW9ubHktdmF1bHQtbWFzdGVyLWtleS0zMi1ieXQ="  # base64 of 32 dev bytes
DEV_SECRET = "development-only-secret-change-me"  # noqa: S105 - refused outside development
# A development-only Ed25519 key pair for access tokens; refused outside development.
DEV_TOKEN_PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"  # noqa: S105 - refused outside development
    "MC4CAQAwBQYDK2VwBCIEIIke7co+89hgwKy/rYFZV3QugtnXGYMWSsyaAl8caGbF\n"
    "-----END PRIVATE KEY-----\n"
)
DEV_TOKEN_PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"  # noqa: S105 - a public key, not a secret
    "MCowBQYDK2VwAyEAsD+6yyxk/P7qBkpjtPOiHlpHGPsP4Br0Ul6IWOJSMWs=\n"
    "-----END PUBLIC KEY-----\n"
)


MIN_SECRET_CHARS = 32  # e.g. base64 of 24 random bytes or more
MASTER_KEY_BYTES = 32  # AES-256: the vault refuses any other length


class UnsafeConfiguration(ValueError):
    """A setting would be unsafe in the environment the process runs in."""


# Secrets are compared by what they mean, not by their text: "$(cat key.pem)" drops the
# final newline, a PEM pasted on one line still loads, and b64decode skips whitespace.
# Each parser returns None for a value it cannot read.


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, IPv6 possibly in brackets) is this machine."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_public_https(variable: str, url: str) -> None:
    """A production link origin must be https (the links carry one-time tokens: P-10) and
    not this machine (every mailed link would lead nowhere)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or is_loopback(parts.hostname):
        raise UnsafeConfiguration(f"{variable} must be the public https origin in production")


def bootstrap_hosts(bootstrap: str) -> list[str]:
    """The hosts of a comma-separated ``host:port`` list."""
    return [server.strip().rsplit(":", 1)[0] for server in bootstrap.split(",") if server.strip()]


def is_development_secret(value: str, dev: str) -> bool:
    """Whether a password-like secret is the development one, surrounding whitespace aside."""
    return value.strip() == dev.strip()


def master_key_bytes(value: str) -> bytes | None:
    """The bytes the vault would unwrap with (it decodes the same way), or None."""
    try:
        key = base64.b64decode(value)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == MASTER_KEY_BYTES else None


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def token_private_key_identity(pem: str) -> bytes | None:
    """The raw public half of a PEM Ed25519 private key, or None."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return _raw(key.public_key()) if isinstance(key, Ed25519PrivateKey) else None


def token_public_key_identity(pem: str) -> bytes | None:
    """The raw bytes of a PEM Ed25519 public key, or None."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return _raw(key) if isinstance(key, Ed25519PublicKey) else None


class PlatformSettings(BaseSettings):
    """Settings common to every process of the platform."""

    model_config = SettingsConfigDict(env_prefix="IMT_", extra="ignore", frozen=True)

    environment: Environment = Field(
        "development",
        description="development, test or production; production refuses dev secrets.",
    )
    service_name: str = Field("imt", description="Name used in logs, metrics and event sources.")
    kafka_bootstrap: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT locally; SSL with the CA below on every other hop."
    )
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle to verify Kafka brokers.")
    kafka_session_timeout_seconds: float = Field(
        10.0,
        ge=1.0,
        le=300.0,
        description="How long a consumer group waits for a silent member (a worker killed or "
        "frozen) before its partitions go to the others: how long they stand still after a "
        "crash. Heartbeats go every third of it. The brokers bound it "
        "(group.min.session.timeout.ms, 6 s by default; the local stack allows 1 s).",
    )
    outbox_idle_poll_seconds: float = Field(
        0.05,
        gt=0,
        le=5,
        description="How often a relay looks at an empty outbox: the longest an event "
        "waits after its commit (the relay polls; NOTIFY would serialise every commit).",
    )
    postgres_host: str = Field("127.0.0.1", description="PostgreSQL host.")
    postgres_port: int = Field(55432, description="PostgreSQL port.")
    postgres_password: SecretStr = Field(
        SecretStr(DEV_SECRET), description="Password of every service role (one role per service)."
    )
    postgres_sslmode: Literal["disable", "prefer", "require", "verify-full"] = Field(
        "prefer", description="asyncpg ssl mode for every database connection."
    )
    postgres_ssl_rootcert: str | None = Field(
        None, description="CA bundle to verify PostgreSQL with (sslmode verify-full)."
    )
    vault_master_key: SecretStr = Field(
        SecretStr(DEV_MASTER_KEY),
        description="Base64 of 32 random bytes wrapping every subject's data key (AES-256-GCM).",
    )
    blind_index_key: SecretStr = Field(
        SecretStr(DEV_SECRET),
        description="HMAC key of blind indexes (lookups by email); outside development and "
        "test at least 32 characters of a random secret.",
    )
    token_public_key: str = Field(
        DEV_TOKEN_PUBLIC_KEY,
        description="PEM Ed25519 public key every service verifies access tokens with; "
        "production refuses the development default (its private half is in the repository).",
    )
    token_private_key: SecretStr = Field(
        SecretStr(DEV_TOKEN_PRIVATE_KEY),
        description="PEM Ed25519 private key accounts signs access tokens with (accounts only:"
        " the other services may set it empty outside development).",
    )
    token_max_seconds: int = Field(
        600,
        gt=0,
        le=3000,
        description="Longest an access token may live: how long every API remembers an "
        "ended session, and how far back it reads them at start (the sessions topic keeps "
        "an hour).",
    )
    http_host: str = Field(
        "127.0.0.1",
        description="Address a service API listens on: loopback, behind the gateway on the "
        "same machine; 0.0.0.0 inside a container (see IMT_TRUSTED_PROXIES: only the gateway's "
        "X-Forwarded-For is believed).",
    )
    trusted_proxies: str = Field(
        "127.0.0.1,::1",
        description="Addresses or networks (comma separated) whose X-Forwarded-For a "
        "service API believes: the gateway's. From any other peer the header is ignored and "
        "the peer is the client (the address login throttling and visitor hashes use).",
    )
    log_level: str = Field("INFO", description="Root log level.")
    state_dir: str = Field(
        "/tmp/imt-privacy",  # noqa: S108 - the local stack's folder; a volume in production
        description="Folder for process state (Faust data, local stack); never personal data.",
    )

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_development(self) -> PlatformSettings:
        if self.environment in ("development", "test"):
            self._refuse_defaulted_development_off_this_machine()
            return self
        dev_token_key = token_public_key_identity(DEV_TOKEN_PUBLIC_KEY)
        master_key = master_key_bytes(self.vault_master_key.get_secret_value())
        private_key = token_private_key_identity(self.token_private_key.get_secret_value())
        public_key = token_public_key_identity(self.token_public_key)
        unsafe = [
            name
            for name, is_dev in (
                ("IMT_VAULT_MASTER_KEY", master_key == master_key_bytes(DEV_MASTER_KEY)),
                (
                    "IMT_BLIND_INDEX_KEY",
                    is_development_secret(self.blind_index_key.get_secret_value(), DEV_SECRET),
                ),
                (
                    "IMT_POSTGRES_PASSWORD",
                    is_development_secret(self.postgres_password.get_secret_value(), DEV_SECRET),
                ),
                ("IMT_TOKEN_PRIVATE_KEY", private_key == dev_token_key),
                # Its private half is in the repository: anyone could sign tokens for it.
                ("IMT_TOKEN_PUBLIC_KEY", public_key == dev_token_key),
            )
            if is_dev
        ]
        if unsafe:
            raise UnsafeConfiguration(
                f"{', '.join(unsafe)} still hold development defaults in {self.environment}"
            )
        # Unreadable keys would only fail at first use (a login, the vault's start). A
        # process that signs nothing (all but accounts) may leave the private key empty.
        signs = bool(self.token_private_key.get_secret_value().strip())
        unreadable = [
            message
            for message, unread in (
                (f"IMT_VAULT_MASTER_KEY must be base64 of {MASTER_KEY_BYTES} bytes", master_key),
                ("IMT_TOKEN_PRIVATE_KEY must be a PEM Ed25519 private key or empty", private_key),
                ("IMT_TOKEN_PUBLIC_KEY must be a PEM Ed25519 public key", public_key),
            )
            if unread is None and (signs or not message.startswith("IMT_TOKEN_PRIVATE_KEY"))
        ]
        if unreadable:
            raise UnsafeConfiguration(f"{'; '.join(unreadable)} in {self.environment}")
        # An empty or short HMAC key makes every email's blind index a hash anyone can
        # recompute from a guessed address.
        if len(self.blind_index_key.get_secret_value().strip()) < MIN_SECRET_CHARS:
            raise UnsafeConfiguration(
                f"IMT_BLIND_INDEX_KEY must hold at least {MIN_SECRET_CHARS} characters"
                f" (a random secret) in {self.environment}"
            )
        # P-10: every hop encrypted and the server verified ("prefer" falls back to
        # plaintext without a word, and checks no certificate).
        if self.postgres_sslmode != "verify-full":
            raise UnsafeConfiguration(
                f"IMT_POSTGRES_SSLMODE must be verify-full in {self.environment}"
            )
        if self.kafka_security_protocol != "SSL":
            raise UnsafeConfiguration(
                f"IMT_KAFKA_SECURITY_PROTOCOL must be SSL in {self.environment}"
            )
        return self

    def _refuse_defaulted_development_off_this_machine(self) -> None:
        """A deployment that forgot ``IMT_ENVIRONMENT`` would run on the development
        secrets in this repository (anyone could open the vault and sign tokens) without a
        word. Servers off this machine tell it is not a laptop: it must then say which
        environment it is (``development`` said explicitly, as the compose file does,
        is accepted)."""
        if "environment" in self.model_fields_set:
            return
        servers = {
            "IMT_KAFKA_BOOTSTRAP": (self.kafka_bootstrap, bootstrap_hosts(self.kafka_bootstrap)),
            "IMT_POSTGRES_HOST": (self.postgres_host, [self.postgres_host]),
        }
        remote = [
            f"{name}={value}"
            for name, (value, hosts) in servers.items()
            if not all(is_loopback(host) for host in hosts)
        ]
        if remote:
            raise UnsafeConfiguration(
                f"IMT_ENVIRONMENT is not set and {', '.join(remote)} is not on this machine:"
                " set IMT_ENVIRONMENT=production (its secrets and TLS are then required), or"
                " development to run on the development secrets there"
            )

    def consumer_groups(self) -> dict[str, tuple[str, ...]]:
        """The service's Kafka consumer groups and the topics each reads (its API reports
        their lag); a service that consumes nothing has none."""
        return {}

    def database_dsn(self, database: str) -> str:
        """DSN of one service's database; the role is named after the database."""
        password = self.postgres_password.get_secret_value()
        dsn = (
            f"postgresql://{database}:{password}@{self.postgres_host}:{self.postgres_port}"
            f"/{database}?sslmode={self.postgres_sslmode}"
        )
        if self.postgres_ssl_rootcert:
            dsn += f"&sslrootcert={self.postgres_ssl_rootcert}"
        return dsn
