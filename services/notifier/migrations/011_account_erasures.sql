-- Which erasures took the whole account (the others took one request's items): a notice
-- that lists a subject whose account erasure is done writes nothing for it, and rows a
-- racing fan-out wrote just after the erasure are swept (see store.sweep_erased).
ALTER TABLE erasures ADD COLUMN whole_account boolean NOT NULL DEFAULT false;
-- An account's erasure went through 'confirming' (its final email) and erased contacts;
-- a request's was recorded 'done' at once, with inbox items at most.
UPDATE erasures SET whole_account = true WHERE erased IS NULL OR erased ? 'contacts';
CREATE INDEX erasures_account_subject ON erasures (subject_id) WHERE whole_account;
CREATE INDEX erasures_account_done ON erasures (erased_at) WHERE whole_account AND state = 'done';
