-- A paused request carried its legal hold's reason, an operator's free text (a case, a
-- court), into its row, its stage history and the DeletionStageChanged it published.
-- That text is kept in legal_holds (and legal_hold_restatements) only: a request
-- paused by a hold now carries the code 'legal_hold', and rows written before say so too.
UPDATE deletion_requests SET reason = 'legal_hold' WHERE stage = 'paused';
UPDATE stage_history SET reason = 'legal_hold' WHERE stage = 'paused';
