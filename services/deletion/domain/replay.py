"""The restore replay, planned without I/O: which rows of a restored database to delete.

A snapshot restored after deletions were recorded would bring the subjects back; before
anything reads it, every deletion whose erasure was not finished when the snapshot was
taken is applied again, by the columns ``subject_columns.toml`` names per database.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from services.deletion.domain.stages import Scope

_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")

SubjectColumns = dict[str, dict[str, tuple[str, ...]]]  # database -> scope -> table.column


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded erasure (account or item), from the deletion database."""

    request_id: UUID
    subject_id: UUID
    scope: Scope
    item_id: UUID | None
    erasing_started_at: datetime
    erased_at: datetime | None


@dataclass(frozen=True)
class ReplayDelete:
    table: str
    column: str
    value: UUID

    def sql(self) -> str:
        # Names come from the validated configuration, never from input.
        return f'DELETE FROM "{self.table}" WHERE "{self.column}" = $1'  # noqa: S608


def parse_subject_columns(text: str) -> SubjectColumns:
    raw = tomllib.loads(text)
    columns: SubjectColumns = {}
    for database, scopes in raw.items():
        columns[database] = {}
        for scope, entries in scopes.items():
            if scope not in ("account", "device", "request"):
                raise ValueError(f"{database}: unknown scope {scope!r}")
            for entry in entries:
                if not _COLUMN.match(entry):
                    raise ValueError(f"{database}.{scope}: {entry!r} is not table.column")
            columns[database][scope] = tuple(entries)
    return columns


def load_subject_columns(path: str | Path) -> SubjectColumns:
    return parse_subject_columns(Path(path).read_text())


def to_replay(ledger: list[LedgerEntry], snapshot_taken_at: datetime) -> list[LedgerEntry]:
    """Erasures the snapshot may predate: not finished when it was taken."""
    return [e for e in ledger if e.erased_at is None or e.erased_at >= snapshot_taken_at]


def replay_plan(
    database: str, columns: SubjectColumns, entries: list[LedgerEntry]
) -> list[ReplayDelete]:
    """The deletes to run in one restored database, in configuration order per entry."""
    plan = []
    for entry in entries:
        value = entry.subject_id if entry.scope == "account" else entry.item_id
        if value is None:
            continue
        for qualified in columns.get(database, {}).get(entry.scope, ()):
            table, column = qualified.split(".")
            plan.append(ReplayDelete(table, column, value))
    return plan
