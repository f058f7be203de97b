"""Settings of the deletion service (the shared ones come from PlatformSettings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from shared.config import PlatformSettings
from shared.events.topics import ACCOUNTS_LIFECYCLE, DELETION_RECEIPTS

#: The worker's consumers (their names mark processed events) and the topic each reads.
SOURCES = {
    "deletion.lifecycle": ACCOUNTS_LIFECYCLE.name,
    "deletion.receipts": DELETION_RECEIPTS.name,
}

HERE = Path(__file__).parent
DAY = 24 * 3600


class DeletionSettings(PlatformSettings):
    service_name: str = "deletion"
    deletion_http_port: int = Field(8102, description="Port of the deletion API (loopback).")
    deletion_grace_seconds: float = Field(
        14 * DAY, ge=0, description="Grace period in which a user can cancel (0 in tests)."
    )
    deletion_stores: str = Field(
        "accounts,notifier,analytics",
        description="Store owners that must answer every EraseSubject (comma separated).",
    )
    deletion_store_timeout_seconds: float = Field(
        3 * DAY, gt=0, description="How long a store may take to answer before escalation."
    )
    deletion_retry_seconds: float = Field(
        60.0, gt=0, description="First resend of an unanswered EraseSubject; doubles each time."
    )
    deletion_retry_max_seconds: float = Field(
        6 * 3600.0, gt=0, description="Longest wait between two resends of an EraseSubject."
    )
    deletion_tick_seconds: float = Field(
        1.0, gt=0, description="How often the worker looks for requests whose next step is due."
    )
    deletion_retention_file: str = Field(
        str(HERE / "retention.toml"),
        description="Versioned retention rules (category, legal basis, period, action).",
    )
    deletion_subject_columns_file: str = Field(
        str(HERE / "subject_columns.toml"),
        description="Where each service database keeps a subject's rows (restore replay).",
    )
    deletion_backup_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("IMT_BACKUP_DIR", "IMT_DELETION_BACKUP_DIR"),
        description="Folder of the database snapshots (default: <state dir>/backups).",
    )
    deletion_backup_retention_seconds: float = Field(
        35 * DAY, gt=0, description="How long a snapshot is kept before `expire` removes it."
    )
    deletion_backup_expire_seconds: float = Field(
        600.0,
        gt=0,
        description="How often the worker removes snapshots past their expiry (no cron needed).",
    )
    deletion_backup_poll_seconds: float = Field(
        3600.0, gt=0, description="How often a request waiting for backups re-checks them."
    )
    deletion_verify_lease_seconds: float = Field(
        300.0, gt=0, description="A verification not recorded by then is started again."
    )
    deletion_admin_role: str = Field(
        "imt_admin", description="Maintenance role for pg_dump/pg_restore."
    )
    deletion_verifier_role: str = Field(
        "imt_verifier",
        description="Role of the verifier's scans: reads every table (pg_read_all_data), "
        "writes none.",
    )
    deletion_verify_backups: bool = Field(
        True, description="The verifier also restores the newest snapshot and scans it."
    )
    deletion_notices: bool = Field(
        True, description="Confirm cancellations by SendNotice (off in benchmarks)."
    )
    deletion_topic_suffix: str = Field(
        "",
        description="Suffix of every topic name (tests and benchmarks run on scratch copies).",
    )
    deletion_database_dsn: str | None = Field(
        None, description="DSN of the deletion database, if not the service role's own."
    )

    def database_dsn(self, database: str) -> str:
        if database == "deletion" and self.deletion_database_dsn:
            return self.deletion_database_dsn
        return super().database_dsn(database)

    def store_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.deletion_stores.split(",") if s.strip())

    def admin_dsn(self, database: str) -> str:
        """DSN of the maintenance role: backups and restores only."""
        return self._role_dsn(self.deletion_admin_role, database)

    def verifier_dsn(self, database: str) -> str:
        """DSN of the verifier's role: it can read any table and change nothing."""
        return self._role_dsn(self.deletion_verifier_role, database)

    def _role_dsn(self, role: str, database: str) -> str:
        password = self.postgres_password.get_secret_value()
        return (
            f"postgresql://{role}:{password}@{self.postgres_host}:{self.postgres_port}/{database}"
        )

    def backup_dir(self) -> Path:
        return Path(self.deletion_backup_dir or Path(self.state_dir) / "backups")

    def topic(self, name: str) -> str:
        return f"{name}{self.deletion_topic_suffix}"

    def consumer_groups(self) -> dict[str, tuple[str, ...]]:
        return {self.group(name): (self.topic(topic),) for name, topic in SOURCES.items()}

    def group(self, consumer: str) -> str:
        return f"{consumer}{self.deletion_topic_suffix}"
