"""Repair invoices (financial records, P-13): what a valid one holds, without I/O.

iMT is paid through a payment provider: an invoice keeps the provider's reference,
never card data. Amounts are exact decimals in the currency's minor unit (ISO 4217).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

FINANCIAL_RECORDS = "financial_records"  # the retention category (deletion's retention.toml)
# Its period there (a unit test holds the two equal): the books need an invoice this long
# after its issue date.
FINANCIAL_RECORDS_DAYS = 1825
# Disclosures, the consents they were made under, deletion requests: ids and dates.
DISCLOSURE_LOG = "disclosure_log"


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Active ISO 4217 codes (2025 list, funds and metals left out) and their minor units.
_ZERO_DECIMALS = _codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF")
_THREE_DECIMALS = _codes("BHD IQD JOD KWD LYD OMR TND")
_FOUR_DECIMALS = _codes("CLF UYW")
_TWO_DECIMALS = _codes("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS
    GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR
    LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD
    PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR
    ZMW ZWG
    """)
MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS, 2),
    **dict.fromkeys(_ZERO_DECIMALS, 0),
    **dict.fromkeys(_THREE_DECIMALS, 3),
    **dict.fromkeys(_FOUR_DECIMALS, 4),
}
MAX_AMOUNT = Decimal("1000000000")  # far above any repair; refuses typos and overflow
OLDEST_ISSUE = date(2000, 1, 1)


def amount_problem(amount: Decimal, currency: str) -> str | None:
    """Why an amount is refused for a currency, or None when it is valid."""
    if currency not in MINOR_UNITS:
        return "the currency is not an ISO 4217 code"
    if not amount.is_finite() or amount <= 0:
        return "the amount must be positive"
    if amount >= MAX_AMOUNT:
        return "the amount is too large"
    places = MINOR_UNITS[currency]
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        return f"{currency} amounts have at most {places} decimal places"
    return None


def last_spent_issue(today: date, period_days: int = FINANCIAL_RECORDS_DAYS) -> date:
    """The latest issue date of an invoice whose financial_records period has ended by
    ``today``: the period counts from the issue, so one issued on or before it is no
    longer needed, however recently its user was erased."""
    return today - timedelta(days=period_days)


def needed_until(latest_issue: date, period_days: int = FINANCIAL_RECORDS_DAYS) -> date:
    """The day the books stop needing invoices issued up to ``latest_issue``."""
    return latest_issue + timedelta(days=period_days)


def issue_date_problem(issued_on: date, today: date) -> str | None:
    """Invoices are recorded when issued: not in the future (a day of time-zone slack)."""
    if issued_on > today + timedelta(days=1):
        return "the issue date is in the future"
    if issued_on < OLDEST_ISSUE:
        return "the issue date is implausibly old"
    return None
