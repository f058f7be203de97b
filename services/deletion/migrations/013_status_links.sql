-- Once the stores are told to erase an account, accounts deletes the user, who can no
-- longer sign in to follow the stages that remain (P-16). The final email links to them
-- instead: a secret minted once per request, mailed through the first EraseSubject and
-- kept here only as its SHA-256, which is what a visitor's link is looked up by.
CREATE TABLE status_links (
    key_hash    bytea PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    request_id  uuid NOT NULL UNIQUE REFERENCES deletion_requests,
    created_at  timestamptz NOT NULL DEFAULT now()
);
