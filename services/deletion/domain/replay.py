"""The restore replay, planned without I/O: which rows of a restored database to delete
(or, for an id listed in an array, to take it out of).

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

_NAME = r"[a-z_][a-z0-9_]*"
# table.column, or table.column.key (a jsonb column's key), optionally reached from a
# child: "child.column -> table.column[.key]" deletes the child's rows whose column
# matches that of the rows found (the same column name in both tables).
# "table.column[]": the id is removed from a uuid[] column; the rows stay.
# "table.column unless keeper.link": the matching rows go, but not those whose ``link``
# is that of a row of ``keeper`` holding the same id in ``column`` (same names in both).
_ENTRY = re.compile(
    rf"^(?:(?P<child>{_NAME})\.(?P<link>{_NAME}) -> )?"
    rf"(?P<table>{_NAME})\.(?P<column>{_NAME})(?:\.(?P<key>{_NAME})|(?P<array>\[\]))?"
    rf"(?: unless (?P<keeper>{_NAME})\.(?P<keeper_link>{_NAME}))?$"
)

SubjectColumns = dict[str, dict[str, tuple[str, ...]]]  # database -> scope -> entries


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
    # A jsonb column's key holding the id as text (notices' params: an id a snapshot
    # taken before it had a column of its own still holds there).
    key: str | None = None
    # Rows of another table linked to the matching ones by ``link`` (the same name in
    # both): those are deleted, not the matching rows themselves.
    child: str | None = None
    link: str | None = None
    # A uuid[] column the id is removed from (a notice still lists its other recipients).
    array: bool = False
    # Matching rows a row of ``keeper`` (same id, same ``keeper_link``) keeps: consents
    # a disclosure was made under, its proof, as the live erasure keeps them.
    keeper: str | None = None
    keeper_link: str | None = None

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables the delete reads or writes (a snapshot may lack one: skipped)."""
        linked = (self.child,) if self.child is not None else ()
        kept = (self.keeper,) if self.keeper is not None else ()
        return (*linked, self.table, *kept)

    def sql(self) -> str:
        # Names come from the validated configuration, never from input.
        c = self.column
        if self.array:
            return (
                f'UPDATE "{self.table}" SET "{c}" = array_remove("{c}", $1::uuid)'  # noqa: S608
                f' WHERE "{c}" @> ARRAY[$1::uuid]'
            )
        if self.keeper is not None:
            return (
                f'DELETE FROM "{self.table}" t WHERE t."{c}" = $1 AND NOT EXISTS'  # noqa: S608
                f' (SELECT 1 FROM "{self.keeper}" k WHERE k."{c}" = $1'
                f' AND k."{self.keeper_link}" = t."{self.keeper_link}")'
            )
        if self.key is None:
            match = f'"{self.column}" = $1'
        else:
            match = f""""{self.column}"->>'{self.key}' = $1::text"""
        if self.child is None:
            return f'DELETE FROM "{self.table}" WHERE {match}'  # noqa: S608
        return (
            f'DELETE FROM "{self.child}" WHERE "{self.link}" IN'  # noqa: S608
            f' (SELECT "{self.link}" FROM "{self.table}" WHERE {match})'
        )

    def argument(self) -> UUID | str:
        return self.value if self.key is None else str(self.value)


def parse_subject_columns(text: str) -> SubjectColumns:
    raw = tomllib.loads(text)
    columns: SubjectColumns = {}
    for database, scopes in raw.items():
        columns[database] = {}
        for scope, entries in scopes.items():
            if scope not in ("account", "device", "request"):
                raise ValueError(f"{database}: unknown scope {scope!r}")
            for entry in entries:
                found = _ENTRY.match(entry)
                if not found:
                    raise ValueError(f"{database}.{scope}: {entry!r} is not table.column")
                if _combines_kinds(found):
                    raise ValueError(f"{database}.{scope}: {entry!r} combines kinds")
            columns[database][scope] = tuple(entries)
    return columns


def _combines_kinds(found: re.Match[str]) -> bool:
    """An array removal, or a delete with a keeper, is of a plain ``table.column`` only
    (a child's link and a jsonb key are the plain delete's)."""
    special = [k for k in ("array", "keeper") if found[k]]
    return bool(special) and (len(special) > 1 or bool(found["child"] or found["key"]))


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
            found = _ENTRY.match(qualified)
            assert found is not None  # validated when parsed
            plan.append(
                ReplayDelete(
                    found["table"],
                    found["column"],
                    value,
                    key=found["key"],
                    child=found["child"],
                    link=found["link"],
                    array=found["array"] is not None,
                    keeper=found["keeper"],
                    keeper_link=found["keeper_link"],
                )
            )
    return plan
