-- A store's receipt may date the end of what it keeps (SubjectErased.retained_until:
-- the youngest kept record's own period), so that a category's release is due then,
-- not a whole period after the erasure (P-13: what is kept is minimised).
ALTER TABLE store_receipts ADD COLUMN retained_until jsonb NOT NULL DEFAULT '{}';
