-- no transaction: exports log their disclosures while this builds, and a plain CREATE
-- INDEX would stop every export until it is done.

-- An export to a recipient is answered a page at a time, each page in a transaction of
-- its own, all under one export id: a user is disclosed at most once in an export, even
-- when a page is asked for twice (a retry, two requests at once), so each disclosure is
-- logged once. The index also finds an export's rows, to check whose export a page's
-- cursor continues. Rows logged before held each user once per export already.
DROP INDEX CONCURRENTLY IF EXISTS disclosures_export_user;
CREATE UNIQUE INDEX CONCURRENTLY disclosures_export_user ON disclosures (export_id, user_id);
