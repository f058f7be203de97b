-- The link that cancels a deletion request names the request it was mailed for, so a
-- retry of a cancel that went through (its answer lost on the way) is told the request
-- is cancelled (409 link-used) rather than that the link is invalid. Links mailed
-- before this have none: a retry of theirs is answered 400 link-invalid, as before.
-- No foreign key: the link goes at the account's erasure, the request is kept longer.
ALTER TABLE action_tokens ADD COLUMN deletion_request_id uuid;
