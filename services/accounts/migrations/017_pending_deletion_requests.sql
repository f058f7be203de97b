-- An operator's deletion request awaiting a second operator (P-15) no longer waits for
-- ever: its requester may withdraw it, another privacy officer or admin may reject it,
-- and one older than IMT_ACCOUNTS_OPERATOR_DELETION_APPROVAL_DAYS is expired (at its
-- approval, or when the user's deletion is requested again). One at a time per user: of
-- several waiting now, all but the latest are expired.
ALTER TABLE deletion_requests DROP CONSTRAINT deletion_requests_status_check;
ALTER TABLE deletion_requests ADD CONSTRAINT deletion_requests_status_check
    CHECK (status IN ('pending_approval', 'requested', 'confirmed', 'cancelled', 'erased',
                      'withdrawn', 'rejected', 'expired'));
UPDATE deletion_requests d SET status = 'expired', updated_at = now()
WHERE d.status = 'pending_approval' AND EXISTS (
    SELECT 1 FROM deletion_requests later
    WHERE later.user_id = d.user_id AND later.status = 'pending_approval'
      AND (later.created_at, later.id) > (d.created_at, d.id)
);
CREATE UNIQUE INDEX deletion_requests_one_pending ON deletion_requests (user_id)
    WHERE status = 'pending_approval';
