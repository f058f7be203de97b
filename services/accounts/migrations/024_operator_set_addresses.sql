-- An address an operator gives an account (P-24: on the user's emailed request) is the
-- account's at once, but it proves nothing about who holds its mailbox: the operator
-- typed it, and may hold it. A password-reset link mailed there would let one operator
-- take the account over (then read it unaudited, or delete it alone: P-07, P-15). So no
-- reset link goes to it while it is recorded here: until the owner signs in under it
-- with their password (services/accounts/routes/auth.py deletes the row), or the
-- account's address is another one (the row names the address, by its blind index).
-- Goes with the user's row.
CREATE TABLE operator_set_addresses (
    user_id     uuid PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    email_index bytea NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now()
);
