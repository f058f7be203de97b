-- no transaction: the audit log holds every operator read and change ever made, and a
-- plain CREATE INDEX would stop every audited read and change while it builds.

-- GET /operator/audit pages in chain order (after_seq), not by id (migration 018). An
-- id is drawn before its row waits for the chain's lock (migration 005), so rows commit
-- in chain_seq order but not in id order: a reader between two commits could get a page
-- ending after an id whose row was still waiting, and never see that row. Each index
-- below finds a page of one subject or one operator in chain order; they replace those
-- by id, which they also serve (a subject's rows, counted at an erasure).
DROP INDEX CONCURRENTLY IF EXISTS audit_log_subject_chain;
CREATE INDEX CONCURRENTLY audit_log_subject_chain ON audit_log (subject_id, chain_seq);
DROP INDEX CONCURRENTLY IF EXISTS audit_log_operator_chain;
CREATE INDEX CONCURRENTLY audit_log_operator_chain ON audit_log (operator_id, chain_seq);
DROP INDEX CONCURRENTLY IF EXISTS audit_log_subject_page;
DROP INDEX CONCURRENTLY IF EXISTS audit_log_operator_page;
