"""Repair invoices: amounts in the currency's minor units, ISO codes, dates, card numbers."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.accounts.domain.invoices import (
    FINANCIAL_RECORDS,
    FINANCIAL_RECORDS_DAYS,
    MINOR_UNITS,
    amount_problem,
    issue_date_problem,
    last_spent_issue,
)
from services.accounts.invoices import InvoiceIn
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy
from shared.observability import Problem

TODAY = date(2026, 11, 29)
VALID = {
    "number": "INV-2026-000042",
    "amount": "129.90",
    "currency": "EUR",
    "repair_reference": "RPR-2026-0815",
    "payment_provider": "stripe",
    "provider_reference": "pi_3QxYzAbCdEfGh",
}


@pytest.mark.parametrize(
    ("amount", "currency", "refused"),
    [
        ("129.90", "EUR", None),
        ("129.9", "EUR", None),
        ("12000", "JPY", None),
        ("12000.5", "JPY", "0 decimal places"),
        ("1.234", "BHD", None),
        ("129.905", "EUR", "2 decimal places"),
        ("0", "EUR", "positive"),
        ("-5", "EUR", "positive"),
        ("1000000000", "EUR", "too large"),
        ("10", "EUX", "ISO 4217"),
        ("10", "XAU", "ISO 4217"),  # a metal, not a currency of account
    ],
)
def test_amounts_are_positive_and_fit_the_currency(
    amount: str, currency: str, refused: str | None
) -> None:
    problem = amount_problem(Decimal(amount), currency)
    assert problem is None if refused is None else refused in (problem or "")


def test_the_code_list_knows_the_common_currencies() -> None:
    assert {MINOR_UNITS[c] for c in ("EUR", "USD", "GBP", "CHF")} == {2}
    assert len(MINOR_UNITS) > 150


def test_invoices_are_not_issued_in_the_future() -> None:
    assert issue_date_problem(TODAY, TODAY) is None
    assert issue_date_problem(date(2026, 11, 30), TODAY) is None  # time-zone slack
    assert issue_date_problem(date(2026, 12, 1), TODAY) == "the issue date is in the future"
    assert issue_date_problem(date(1999, 12, 31), TODAY) == "the issue date is implausibly old"


def test_a_valid_invoice_is_issued_today_by_default() -> None:
    assert InvoiceIn.model_validate(VALID).checked(TODAY) == TODAY


@pytest.mark.parametrize(
    "field", ["number", "repair_reference", "provider_reference", "description"]
)
def test_a_card_number_in_any_text_field_is_refused(field: str) -> None:
    body = InvoiceIn.model_validate({**VALID, field: "4111111111111111"})
    with pytest.raises(Problem) as refused:
        body.checked(TODAY)
    assert refused.value.status == 422
    assert "4111" not in str(refused.value.detail)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", "INV 42 for Jane Doe"),  # references hold no spaces, so no sentences
        ("currency", "eur"),
        ("amount", "NaN"),
        ("amount", "12.34567"),
        ("payment_provider", "Stripe Inc."),
    ],
)
def test_malformed_fields_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        InvoiceIn.model_validate({**VALID, field: value})


def test_an_invoices_period_counts_from_its_issue_date() -> None:
    # Issued on 2021-11-30, its 1825 days (2024's leap day among them) end today: it goes.
    assert last_spent_issue(TODAY, 1825) == date(2021, 11, 30)
    assert last_spent_issue(TODAY, 1) == date(2026, 11, 28)
    # By default, the financial_records period: five years of days.
    assert last_spent_issue(TODAY) == TODAY - timedelta(days=FINANCIAL_RECORDS_DAYS)
    assert last_spent_issue(TODAY) == date(2021, 11, 30)


def test_the_period_is_the_deletion_services_financial_records_period() -> None:
    # The shipped file: the e2e suites point the setting at a copy with seconds.
    policy = load_policy(DeletionSettings.model_fields["deletion_retention_file"].default)
    (rule,) = [r for r in policy.rules if r.category == FINANCIAL_RECORDS]
    assert rule.period_days == FINANCIAL_RECORDS_DAYS
