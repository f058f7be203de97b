-- Accounts' own tables. Personal columns are sealed with the subject's vault key
-- (bytea); email lookups go through a keyed blind index.
CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email_index bytea NOT NULL UNIQUE,
    email       bytea NOT NULL,
    name        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
