"""Retention rules from the versioned file."""

from datetime import date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy, parse_policy
from tests.unit.deletion.factories import T0

Receipt = tuple[str, dict[str, int], dict[str, date]]
RULES = """
version = "test-1"
[[rule]]
category = "financial_records"
legal_basis = "financial"
period_days = 1825
action = "keep_anonymised"
tables = ["billing.invoices"]
[[rule]]
category = "content"
legal_basis = "legal_obligation"
period_days = 0
action = "erase"
"""


def test_kept_categories_are_retained_for_their_period_then_released() -> None:
    policy = parse_policy(RULES)
    assert policy.version == "test-1"
    assert policy.retain_categories() == ("financial_records",)
    assert policy.releases(T0) == {"financial_records": T0 + timedelta(days=1825)}
    assert policy.may_keep("billing.invoices", T0, T0 + timedelta(days=1824))
    assert not policy.may_keep("billing.invoices", T0, T0 + timedelta(days=1825))
    assert not policy.may_keep("billing.payments", T0, T0)


def test_a_release_is_due_when_the_stores_say_the_last_kept_record_may_go() -> None:
    """Each record's period counts from its own date: a store that dates the youngest
    of what it keeps brings the release forward, never past the erasure's period."""
    policy = parse_policy(RULES)
    full = T0 + timedelta(days=1825)
    soon = (T0 + timedelta(days=30)).date()
    later = (T0 + timedelta(days=60)).date()
    at_soon = datetime.combine(later, T0.timetz())
    assert policy.releases(T0, {"financial_records": [soon, later]}) == {
        "financial_records": at_soon  # the latest store's day counts
    }
    beyond = (T0 + timedelta(days=4000)).date()
    assert policy.releases(T0, {"financial_records": [beyond]}) == {"financial_records": full}
    past = (T0 - timedelta(days=5)).date()
    assert policy.releases(T0, {"financial_records": [past]}) == {"financial_records": T0}
    assert policy.releases(T0, {"content": [soon]}) == {"financial_records": full}


def test_a_category_a_store_keeps_without_a_day_waits_its_whole_period() -> None:
    policy = parse_policy(RULES)
    soon = (T0 + timedelta(days=30)).date()
    dated = ("billing", {"invoices": 2}, {"financial_records": soon})
    assert policy.dated([dated]) == {"financial_records": [soon]}
    silent: Receipt = ("ledger", {}, {})  # kept nothing of it: says nothing, changes nothing
    assert policy.dated([dated, silent]) == {"financial_records": [soon]}
    # Another store keeps rows of the category and gives no day: none counts.
    other_rules = RULES.replace(
        'tables = ["billing.invoices"]', 'tables = ["billing.invoices", "shop.orders"]'
    )
    two = parse_policy(other_rules)
    assert two.dated([dated, ("shop", {"orders": 1}, {})]) == {}
    assert two.dated([dated, ("shop", {"orders": 0}, {})]) == {"financial_records": [soon]}


def test_the_shipped_rules_parse_and_name_a_legal_basis_each() -> None:
    policy = load_policy(DeletionSettings().deletion_retention_file)
    assert {r.legal_basis for r in policy.rules} <= {
        "security", "fraud_abuse", "financial", "legal_obligation",
    }  # fmt: skip
    assert "financial_records" in policy.retain_categories()
    assert policy.may_keep("accounts.audit_log", T0, T0)
    assert not policy.may_keep("accounts.users", T0, T0)
    # Invoices are kept anonymised by accounts: a row still holding the subject's id is
    # never accepted, even within the period.
    financial = policy.anonymised_by("accounts.invoices")
    assert financial is not None
    assert (financial.category, financial.legal_basis) == ("financial_records", "financial")
    assert policy.anonymised_by("accounts.retention_keys") is financial
    assert not policy.may_keep("accounts.invoices", T0, T0)
    assert policy.rule_for_table("accounts.invoices") is None


def test_a_table_is_kept_under_one_rule_whether_by_id_or_anonymised() -> None:
    rules = RULES.replace(
        'tables = ["billing.invoices"]',
        'tables = ["billing.audit"]\nanonymised_tables = ["billing.invoices"]',
    )
    policy = parse_policy(rules)
    assert policy.anonymised_by("billing.invoices") is not None
    assert not policy.may_keep("billing.invoices", T0, T0)
    assert policy.may_keep("billing.audit", T0, T0)
    with pytest.raises(ValidationError, match="more than one rule"):
        parse_policy(rules.replace('"billing.audit"', '"billing.invoices"'))
    with pytest.raises(ValidationError, match="database"):
        parse_policy(rules.replace('["billing.invoices"]', '["invoices"]'))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('legal_basis = "financial"', 'legal_basis = "marketing"'), "legal_basis"),
        (('action = "erase"', 'action = "forget"'), "action"),
        (('"billing.invoices"', '"invoices"'), "database"),
        (('category = "content"', 'category = "financial_records"'), "more than one rule"),
    ],
)
def test_invalid_rules_are_refused(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_policy(RULES.replace(*edit))
