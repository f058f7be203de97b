-- no transaction: the audit log holds every operator read and change ever made, and a
-- plain CREATE INDEX would stop every audited read and change while it builds.

-- GET /operator/audit reads a page at a time, by id after the last one shown (keyset
-- paging), for one subject or one operator: each index below finds a page in id order.
-- They replace the single-column ones, which they lead with.
DROP INDEX CONCURRENTLY IF EXISTS audit_log_subject_page;
CREATE INDEX CONCURRENTLY audit_log_subject_page ON audit_log (subject_id, id);
DROP INDEX CONCURRENTLY IF EXISTS audit_log_operator_page;
CREATE INDEX CONCURRENTLY audit_log_operator_page ON audit_log (operator_id, id);
DROP INDEX CONCURRENTLY IF EXISTS audit_log_subject;
DROP INDEX CONCURRENTLY IF EXISTS audit_log_operator;
