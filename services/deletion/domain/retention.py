"""Retention rules: which record categories outlive a deletion, why, and for how long.

The rules come from a versioned TOML file (``retention.toml``)::

    version = "2025-06-01"

    [[rule]]
    category = "financial_records"
    legal_basis = "financial"          # security | fraud_abuse | financial | legal_obligation
    period_days = 1825
    action = "keep_anonymised"         # or "erase"
    tables = []                        # kept rows that still hold the subject's id (ids only)
    anonymised_tables = ["accounts.invoices"]  # kept rows that hold no id of the subject

A category kept anonymised is named in the ``retain_categories`` of the first
EraseSubject; when its period ends a second EraseSubject erases it too.

``tables`` are where the verifier may find kept rows that still reference the subject
(ids only, e.g. an audit log) and accepts them within the period. ``anonymised_tables``
are where the owning store keeps the category with the subject's id replaced (e.g. by a
random retention key): the verifier never finds them, and a row there that still holds
the id is a finding, whatever the period.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LegalBasis = Literal["security", "fraud_abuse", "financial", "legal_obligation"]
Action = Literal["keep_anonymised", "erase"]


class RetentionRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    legal_basis: LegalBasis
    period_days: float = Field(ge=0)
    action: Action
    tables: tuple[str, ...] = ()
    anonymised_tables: tuple[str, ...] = ()
    note: str = ""

    @field_validator("tables", "anonymised_tables")
    @classmethod
    def _qualified(cls, tables: tuple[str, ...]) -> tuple[str, ...]:
        for table in tables:
            if table.count(".") != 1:
                raise ValueError(f"table {table!r} is not <database>.<table>")
        return tables

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.period_days)


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    rules: tuple[RetentionRule, ...] = Field(alias="rule")

    @field_validator("rules")
    @classmethod
    def _one_rule_per_category(cls, rules: tuple[RetentionRule, ...]) -> tuple[RetentionRule, ...]:
        names = [r.category for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"categories with more than one rule: {', '.join(duplicates)}")
        tables = [t for r in rules for t in (*r.tables, *r.anonymised_tables)]
        shared = sorted({t for t in tables if tables.count(t) > 1})
        if shared:
            raise ValueError(f"tables under more than one rule: {', '.join(shared)}")
        return rules

    def kept(self) -> tuple[RetentionRule, ...]:
        return tuple(r for r in self.rules if r.action == "keep_anonymised" and r.period_days)

    def retain_categories(self) -> tuple[str, ...]:
        """Categories the first erasure keeps, anonymised."""
        return tuple(r.category for r in self.kept())

    def releases(
        self, erased_at: datetime, kept_until: Mapping[str, Sequence[date]] | None = None
    ) -> dict[str, datetime]:
        """When each kept category must go: its period counted from the erasure, or
        sooner, the day the stores said the last of its records may go (``kept_until``:
        each store's day; the latest counts, at the erasure's time of day)."""
        due = {}
        for rule in self.kept():
            at = erased_at + rule.period
            days = (kept_until or {}).get(rule.category)
            if days:
                said = datetime.combine(max(days), erased_at.timetz())
                at = min(at, max(said, erased_at))
            due[rule.category] = at
        return due

    def dated(
        self, receipts: Iterable[tuple[str, Mapping[str, int], Mapping[str, date]]]
    ) -> dict[str, list[date]]:
        """Per kept category, the days the stores' receipts (store, kept rows by table,
        days by category) said its records may go; none for a category some store
        keeps rows of without saying a day: its period then counts from the erasure."""
        days: dict[str, list[date]] = {}
        undated: set[str] = set()
        for store, kept, until in receipts:
            for table, count in kept.items():
                category = self.category_of(f"{store}.{table}")
                if count and category is not None and category not in until:
                    undated.add(category)
            for category, day in until.items():
                days.setdefault(category, []).append(day)
        return {category: d for category, d in days.items() if category not in undated}

    def category_of(self, qualified_table: str) -> str | None:
        """The category whose kept rows this table holds, by id or anonymised."""
        return next(
            (
                r.category
                for r in self.rules
                if qualified_table in (*r.tables, *r.anonymised_tables)
            ),
            None,
        )

    def rule_for_table(self, qualified_table: str) -> RetentionRule | None:
        """The rule whose kept rows may still reference the subject in this table."""
        return next((r for r in self.rules if qualified_table in r.tables), None)

    def anonymised_by(self, qualified_table: str) -> RetentionRule | None:
        """The rule whose kept rows hold no id of the subject in this table."""
        return next((r for r in self.rules if qualified_table in r.anonymised_tables), None)

    def may_keep(self, qualified_table: str, erased_at: datetime | None, now: datetime) -> bool:
        """Whether rows of this table may still reference an erased subject (ids only).

        Never for an anonymised table: its kept rows must hold no id of the subject.
        """
        rule = self.rule_for_table(qualified_table)
        if rule is None or rule.action != "keep_anonymised":
            return False
        return erased_at is None or now < erased_at + rule.period


def parse_policy(text: str) -> RetentionPolicy:
    return RetentionPolicy.model_validate(tomllib.loads(text))


def load_policy(path: str | Path) -> RetentionPolicy:
    return parse_policy(Path(path).read_text())
