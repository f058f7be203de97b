-- When accounts closed the request's cancel window (DeletionConfirmed): a whole account
-- is erased only after it, so a cancel accounts took never meets an erasure. Requests
-- already past grace when this ran were let through under the old rule: theirs is
-- taken as closed when they entered their stage.
ALTER TABLE deletion_requests ADD COLUMN cancel_window_closed_at timestamptz;
UPDATE deletion_requests SET cancel_window_closed_at = stage_entered_at
 WHERE scope = 'account'
   AND stage NOT IN ('requested', 'grace', 'cancelled')
   AND NOT (stage = 'paused' AND paused_from IN ('requested', 'grace'));
