-- no transaction: these tables hold every user and every email ever sent, and a plain
-- CREATE INDEX would stop the senders, the planner and the contacts consumer while it
-- builds.

-- The emails waiting for their contact card, by user: the sender looks for those whose
-- card has come after every card commit and every recorded wait (store.wake_for_cards).
-- Few rows wait at any time, so the look costs next to nothing however often it runs.
DROP INDEX CONCURRENTLY IF EXISTS deliveries_waiting;
CREATE INDEX CONCURRENTLY deliveries_waiting ON deliveries (user_id)
    WHERE status = 'pending' AND waiting_since IS NOT NULL;

-- The erased-contacts sweep runs every minute in every worker: it reads the tombstoned
-- contacts, not the whole table.
DROP INDEX CONCURRENTLY IF EXISTS contacts_erase_pending;
CREATE INDEX CONCURRENTLY contacts_erase_pending ON contacts (updated_at) WHERE erase_pending;

-- An operator's count of who was told of a policy version (GET ops/policy-versions/{v}):
-- the primary key leads with the user.
DROP INDEX CONCURRENTLY IF EXISTS policy_notices_version;
CREATE INDEX CONCURRENTLY policy_notices_version ON policy_notices (policy_version);
