-- A ticket names the session that bought it, and when that session's token expires:
-- the stream it opens ends with that token, or as soon as the session is revoked.
ALTER TABLE stream_tickets ADD COLUMN session_id text;
ALTER TABLE stream_tickets ADD COLUMN token_iat bigint;
ALTER TABLE stream_tickets ADD COLUMN token_exp bigint;
