"""What an erasure keeps with the disclosure log is what the retention rules let the
verifier find kept, and what the receipt says is kept."""

from __future__ import annotations

from services.accounts.domain.invoices import DISCLOSURE_LOG
from services.accounts.handlers import _DISCLOSURE_LOG, _RETAINED
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy


def test_every_table_kept_with_the_disclosure_log_is_under_its_rule() -> None:
    policy = load_policy(DeletionSettings().deletion_retention_file)
    (rule,) = [r for r in policy.rules if r.category == DISCLOSURE_LOG]
    kept = {f"accounts.{table}" for table, _ in _DISCLOSURE_LOG}
    # A table missing from the rule would make the verifier call the kept rows a finding.
    assert kept <= set(rule.tables)
    assert "accounts.consents" in kept  # the proof each disclosure had consent (P-18)


def test_the_receipt_counts_what_the_disclosure_log_keeps() -> None:
    counted = {table for table, _ in _RETAINED}
    # recipient_erasures is proof of the forwarding, counted as forwarded_to_recipients.
    assert {table for table, _ in _DISCLOSURE_LOG} - counted == {"recipient_erasures"}
