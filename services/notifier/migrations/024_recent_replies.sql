-- no transaction: the notices table holds every reply ever sent.

-- Replies by when they came: the sweep after a request's erasure looks for those
-- accepted alongside it (the last hours), and knows the request by its digest only.
DROP INDEX CONCURRENTLY IF EXISTS notices_recent_replies;
CREATE INDEX CONCURRENTLY notices_recent_replies ON notices (created_at)
    WHERE request_id IS NOT NULL;
