-- A password reset asked for while the account's row is held (an export reads it) is
-- answered within its floor and mailed once the row is free. It waited in the API
-- process's memory, lost if the process stopped; it now waits here, and a round of the
-- accounts worker mails it (services/accounts/pending_resets.py), then deletes the row.
-- No foreign key to users: inserting a row that references one takes a KEY SHARE lock
-- on the user's row, which waits for whoever holds it FOR UPDATE, the very wait the
-- answer must not make. A row whose user is gone (erased) is deleted by the erasure, or
-- else by the worker's next round.
CREATE TABLE pending_resets (
    user_id  uuid PRIMARY KEY,
    asked_at timestamptz NOT NULL DEFAULT now()
);
