-- no transaction: inbox_items holds every item ever written.

-- The live inbox's catch-up after a lost listener reads the items written since its
-- horizon (the last seconds, or the transactions still open then), for the users
-- connected to the process: by (user_id, notice_id) it would read every item those users
-- ever had. A fan-out's rows share one transaction id, the newest: they go in one place
-- of the index, at its end. The items from before 025 (NULL) are left out of it.
DROP INDEX CONCURRENTLY IF EXISTS inbox_items_written_xid;
CREATE INDEX CONCURRENTLY inbox_items_written_xid ON inbox_items (written_xid)
    WHERE written_xid IS NOT NULL;
