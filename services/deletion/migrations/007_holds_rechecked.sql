-- A whole account waiting in 'holds' for accounts' DeletionConfirmed used to have no
-- next check: if accounts never got the 'holds' announcement (dead-lettered), nothing
-- would ever happen to it. The worker now announces it again with back-off and
-- escalates it at the store timeout; the requests already waiting are due now, so the
-- ticker takes them into that cycle (one waiting longer than the timeout is escalated).
UPDATE deletion_requests SET next_check_at = now()
 WHERE stage = 'holds' AND next_check_at IS NULL;
