-- The ids of the salts a window's visitors were hashed with. A collector draws a salt
-- per process and day (in memory only), so a network seen before and after a restart,
-- or by two replicas, has one hash per salt: a window of s salts holds at least
-- 1/s of its distinct hashes in networks, and releases count that (P-20). Ids are
-- random and say nothing of the salts; '' stands for visits sent without one.
ALTER TABLE trend_windows ADD COLUMN salts text[] NOT NULL DEFAULT '{}';
