-- Once the stores are told to erase an account, accounts deletes the user, who can no
-- longer sign in to follow the stages that remain (P-16). The final email links to them
-- instead: a secret minted once per request and sent with every EraseSubject of it (the
-- notifier mails the first it can process, which may be a resend). A link is looked up
-- by the secret's SHA-256. The secret itself is kept so that resends carry it: the link
-- shows only what this database holds anyway (stages, dates, the certificate).
CREATE TABLE status_links (
    request_id  uuid PRIMARY KEY REFERENCES deletion_requests,
    key         text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
