-- 'confirmed': the deletion service said the grace period ended and no cancel had come,
-- so accounts closed the cancel window (DeletionConfirmed): a cancel is refused from
-- then on, and only then may the account be erased.
ALTER TABLE deletion_requests DROP CONSTRAINT deletion_requests_status_check;
ALTER TABLE deletion_requests ADD CONSTRAINT deletion_requests_status_check
    CHECK (status IN ('pending_approval', 'requested', 'confirmed', 'cancelled', 'erased'));
