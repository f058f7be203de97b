-- A refresh answered but never received (the connection dropped, a second tab sent the
-- same token at once) is sent again: within IMT_ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS,
-- while the token it was traded for is unused, the same successor is answered again
-- instead of the session being ended as a stolen token's (services/accounts/sessions.py).
-- The successor is kept sealed with a key derived from the spent token itself, which is
-- kept only as a hash: the database alone cannot open it.
ALTER TABLE refresh_tokens
    ADD COLUMN successor_hash bytea,
    ADD COLUMN successor_sealed bytea;
