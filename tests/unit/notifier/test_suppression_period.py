"""The notifier's sweep keeps suppressions for the period the retention rules state."""

from __future__ import annotations

from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy
from services.notifier import store


def test_suppressions_are_kept_for_the_suppression_list_rules_period() -> None:
    policy = load_policy(DeletionSettings().deletion_retention_file)
    rule = next(r for r in policy.rules if r.category == "suppression_list")
    assert rule.period_days == store.SUPPRESSION_DAYS


def test_the_operators_records_of_suppressions_are_under_the_same_rule() -> None:
    """They go with their suppression (store.forget_lapsed_suppressions). Neither holds
    the subject's id: one found there (typed into a reference) is a finding."""
    policy = load_policy(DeletionSettings().deletion_retention_file)
    for table in ("notifier.suppressions", "notifier.operator_suppressions"):
        assert policy.category_of(table) == "suppression_list"
        assert policy.anonymised_by(table) is not None
