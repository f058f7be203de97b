-- 005 took the cancel window of a request in 'holds', or paused from it, as closed. But
-- accounts had not confirmed those: it could still answer a cancel 200, which this
-- service would then refuse, and erase once the hold was lifted. Their windows are
-- open again: lifting the hold re-enters 'holds', whose announcement accounts answers
-- (confirm, or leave cancelled). Only the windows 005 closed (closed when the stage was
-- entered) are opened; one that accounts closed keeps its own time.
UPDATE deletion_requests SET cancel_window_closed_at = NULL
 WHERE cancel_window_closed_at = stage_entered_at
   AND (stage = 'holds' OR (stage = 'paused' AND paused_from = 'holds'));
