-- A retention release used to be sent once and never checked: a release a store
-- dead-lettered left the kept records there for ever (P-13). A release now awaits its
-- stores' receipts as an erasure does: resent with back-off until every expected store
-- answered (its receipts carry the release's erase_id), escalated to an operator at the
-- store timeout. `next_check_at` is when the ticker looks at it next: its due date
-- until it is sent, then the next resend or the deadline; none once answered or
-- escalated (a late receipt still answers an escalated one).
ALTER TABLE retention_releases
    ADD COLUMN expected_stores text[] NOT NULL DEFAULT '{}',
    ADD COLUMN send_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_send_at timestamptz,
    ADD COLUMN answer_deadline timestamptz,
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN escalated_at timestamptz,
    ADD COLUMN reason text,
    ADD COLUMN next_check_at timestamptz;

UPDATE retention_releases SET next_check_at = due_at WHERE sent_at IS NULL;

-- Releases already sent were sent once: they expected the stores their request did.
-- Those every store answered are done; the others are due now, resent and given a
-- fresh timeout by the worker (a store answers a repeated release as the first).
UPDATE retention_releases rr SET expected_stores = r.expected_stores, send_attempts = 1
  FROM deletion_requests r
 WHERE r.request_id = rr.request_id AND rr.sent_at IS NOT NULL;
UPDATE retention_releases rr SET answered_at = now()
 WHERE rr.sent_at IS NOT NULL AND rr.expected_stores <@ ARRAY(
     SELECT store FROM store_receipts WHERE erase_id = rr.erase_id AND superseded_at IS NULL);
UPDATE retention_releases SET next_check_at = now()
 WHERE sent_at IS NOT NULL AND answered_at IS NULL;

CREATE INDEX retention_releases_next_check ON retention_releases (next_check_at)
    WHERE next_check_at IS NOT NULL;
CREATE INDEX retention_releases_escalated ON retention_releases (escalated_at)
    WHERE escalated_at IS NOT NULL AND answered_at IS NULL;
