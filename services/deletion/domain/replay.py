"""The restore replay, planned without I/O: which rows of a restored database to delete
(or, for an id listed in an array, to take it out of).

A snapshot restored after deletions were recorded would bring the subjects back; before
anything reads it, every deletion whose erasure was not finished when the snapshot was
taken is applied again, by the columns ``subject_columns.toml`` names per database. So
is every retention release not answered by then: a snapshot taken between an erasure
and the release of what it kept holds those kept rows, which the release erased live.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from services.deletion.domain.stages import Scope
from shared.vault.crypto import blind_index

_NAME = r"[a-z_][a-z0-9_]*"
# table.column, or table.column.key (a jsonb column's key), optionally reached from a
# child: "child.column -> table.column[.key]" deletes the child's rows whose column
# matches that of the rows found (the same column name in both tables).
# "table.column[]": the id is removed from a uuid[] column; the rows stay.
# "table.column unless keeper.link": the matching rows go, but not those whose ``link``
# is that of a row of ``keeper`` holding the same id in ``column`` (same names in both).
# "table.column#index": the column holds the id's blind index (the vault's keyed hash,
# purpose "<database>.<table>.<column>"), not the id: a retention key's owner.
_ENTRY = re.compile(
    rf"^(?:(?P<child>{_NAME})\.(?P<link>{_NAME}) -> )?"
    rf"(?P<table>{_NAME})\.(?P<column>{_NAME})"
    rf"(?:\.(?P<key>{_NAME})|(?P<array>\[\])|(?P<index>#index))?"
    rf"(?: unless (?P<keeper>{_NAME})\.(?P<keeper_link>{_NAME}))?$"
)

# database -> scope -> entries; a retention category's release is the scope
# "release:<category>" (``[<database>.release]`` in the file).
SubjectColumns = dict[str, dict[str, tuple[str, ...]]]
RELEASE = "release:"


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
class ReleaseEntry:
    """One retention release (a kept category erased when its period ended)."""

    subject_id: UUID
    category: str
    answered_at: datetime | None  # every store answered it


@dataclass(frozen=True)
class ReplayDelete:
    table: str
    column: str
    value: UUID | bytes  # bytes: a blind index of the id
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

    def argument(self) -> UUID | bytes | str:
        return self.value if self.key is None else str(self.value)


def parse_subject_columns(text: str) -> SubjectColumns:
    raw = tomllib.loads(text)
    columns: SubjectColumns = {}
    for database, scopes in raw.items():
        columns[database] = {}
        for scope, entries in _flat_scopes(database, scopes).items():
            for entry in entries:
                found = _ENTRY.match(entry)
                if not found:
                    raise ValueError(f"{database}.{scope}: {entry!r} is not table.column")
                if _combines_kinds(found):
                    raise ValueError(f"{database}.{scope}: {entry!r} combines kinds")
            columns[database][scope] = tuple(entries)
    return columns


def _flat_scopes(database: str, scopes: Mapping[str, object]) -> dict[str, list[str]]:
    """Scopes by name, each release's as ``release:<category>``."""
    flat: dict[str, list[str]] = {}
    for scope, entries in scopes.items():
        if scope == "release" and isinstance(entries, dict):
            flat.update({f"{RELEASE}{category}": list(e) for category, e in entries.items()})
        elif scope in ("account", "device", "request") and isinstance(entries, list):
            flat[scope] = entries
        else:
            raise ValueError(f"{database}: unknown scope {scope!r}")
    return flat


def _combines_kinds(found: re.Match[str]) -> bool:
    """An array removal, or a delete with a keeper, is of a plain ``table.column`` only
    (a child's link, a jsonb key and a blind index are the plain delete's)."""
    special = [k for k in ("array", "keeper") if found[k]]
    return bool(special) and (len(special) > 1 or bool(found["child"] or found["key"]))


def load_subject_columns(path: str | Path) -> SubjectColumns:
    return parse_subject_columns(Path(path).read_text())


def to_replay(ledger: list[LedgerEntry], snapshot_taken_at: datetime) -> list[LedgerEntry]:
    """Erasures the snapshot may predate: not finished when it was taken."""
    return [e for e in ledger if e.erased_at is None or e.erased_at >= snapshot_taken_at]


def releases_to_replay(
    releases: Sequence[ReleaseEntry], snapshot_taken_at: datetime
) -> list[ReleaseEntry]:
    """Releases the snapshot may predate: not answered by every store when it was taken."""
    return [r for r in releases if r.answered_at is None or r.answered_at >= snapshot_taken_at]


def replay_plan(
    database: str,
    columns: SubjectColumns,
    entries: list[LedgerEntry],
    releases: Sequence[ReleaseEntry] = (),
    index_key: bytes = b"",
) -> list[ReplayDelete]:
    """The deletes to run in one restored database, in configuration order per entry:
    the erasures', then the releases' (``index_key`` is the vault's blind-index key,
    for entries that find the subject by its blind index)."""
    plan = []
    for entry in entries:
        value = entry.subject_id if entry.scope == "account" else entry.item_id
        if value is not None:
            plan += _deletes(database, columns.get(database, {}).get(entry.scope, ()), value, b"")
    for release in releases:
        released = columns.get(database, {}).get(f"{RELEASE}{release.category}", ())
        plan += _deletes(database, released, release.subject_id, index_key)
    return plan


def _deletes(
    database: str, entries: tuple[str, ...], value: UUID, index_key: bytes
) -> list[ReplayDelete]:
    plan = []
    for qualified in entries:
        found = _ENTRY.match(qualified)
        assert found is not None  # validated when parsed
        matched: UUID | bytes = value
        if found["index"]:
            if not index_key:
                raise ValueError(f"{database}: {qualified!r} needs the blind-index key")
            purpose = f"{database}.{found['table']}.{found['column']}"
            matched = blind_index(index_key, purpose, str(value))
        plan.append(
            ReplayDelete(
                found["table"],
                found["column"],
                matched,
                key=found["key"],
                child=found["child"],
                link=found["link"],
                array=found["array"] is not None,
                keeper=found["keeper"],
                keeper_link=found["keeper_link"],
            )
        )
    return plan
