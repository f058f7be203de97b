-- A breach fan-out writes 100,000 inbox rows in one statement: each btree with a random
-- key costs about as much as the rows themselves. The idempotency key becomes
-- (user_id, notice_id), which also serves each user's inbox; a notice's rows, written
-- together, are found through a BRIN index (next to free to maintain), and the email
-- planner walks them by id.
ALTER TABLE inbox_items DROP CONSTRAINT inbox_items_idempotency_key;
DROP INDEX inbox_items_user;
ALTER TABLE inbox_items ADD CONSTRAINT inbox_items_idempotency_key UNIQUE (user_id, notice_id);
CREATE INDEX inbox_items_notice ON inbox_items USING brin (notice_id);
ALTER TABLE notices DROP COLUMN email_cursor;
ALTER TABLE notices ADD COLUMN email_cursor bigint;  -- the last inbox item id planned
