"""Detect and remove personal data (emails, phones, cards, IPs, secrets) from text and URLs.

Pure functions, no I/O: every service calls them before anything reaches Kafka, a
database or an API response (promises P-04 and P-09).
"""

from shared.pii.cards import contains_card_number, find_card_numbers
from shared.pii.detectors import contains_pii, find_pii, find_pii_of_kinds
from shared.pii.emails import find_emails
from shared.pii.findings import Finding, PiiKind
from shared.pii.ip_addresses import find_ipv4, find_ipv6
from shared.pii.luhn import luhn_valid
from shared.pii.phones import find_phone_numbers
from shared.pii.redact import redact
from shared.pii.tokens import find_tokens
from shared.pii.urls import DEFAULT_ALLOWED_QUERY_KEYS, referrer_host, scrub_url

__all__ = [
    "DEFAULT_ALLOWED_QUERY_KEYS",
    "Finding",
    "PiiKind",
    "contains_card_number",
    "contains_pii",
    "find_card_numbers",
    "find_emails",
    "find_ipv4",
    "find_ipv6",
    "find_phone_numbers",
    "find_pii",
    "find_pii_of_kinds",
    "find_tokens",
    "luhn_valid",
    "redact",
    "referrer_host",
    "scrub_url",
]
