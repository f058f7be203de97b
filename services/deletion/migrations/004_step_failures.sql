-- Failures in a row of a request's due step: the ticker puts the request back by a
-- delay that doubles with each one, so a request that keeps failing is neither retried
-- in a tight loop nor first in line at every tick.
ALTER TABLE deletion_requests ADD COLUMN step_failures integer NOT NULL DEFAULT 0;
