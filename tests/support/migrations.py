"""Upgrade tests: a database at the migrations before a version, then the rest."""

from __future__ import annotations

from pathlib import Path

from shared.db.migrations import migration_files

Migrations = list[tuple[str, Path]]


def split_at(database: str, folder: Path, first: str) -> tuple[Migrations, Migrations]:
    """The migrations before the one named ``first`` (e.g. "011_account_erasures"), and
    that one with those after it: rows written between the two are what an upgrade
    finds."""
    files = migration_files(database, folder)
    cut = next(i for i, (version, _) in enumerate(files) if version.endswith(first))
    return files[:cut], files[cut:]
