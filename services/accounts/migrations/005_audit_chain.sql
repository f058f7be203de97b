-- Tamper evidence for the audit log. The append-only triggers stop the service's code,
-- but the role that owns the table can disable them. So every row is also linked into a
-- hash chain: chain = sha256(previous row's chain || the row's canonical bytes), in
-- chain_seq order (1, 2, ...). Changing, removing or inserting a row breaks every link
-- after it, and each link is also published to Kafka (accounts.audit) in the row's own
-- transaction, where the database's owner cannot rewrite it. services/accounts/
-- audit_chain.py checks both; canonical bytes are defined there and here, tested equal.

ALTER TABLE audit_log ADD COLUMN chain_seq bigint UNIQUE, ADD COLUMN chain bytea;

-- Each field as <length>:<text>, so no field's text can pass for a field boundary; NULL
-- is "-". ``at`` in microseconds since the epoch: exact, and independent of DateStyle
-- and TimeZone.
CREATE FUNCTION audit_log_canonical(a audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(string_agg(
        CASE WHEN f IS NULL THEN '-' ELSE length(f) || ':' || f END, '|' ORDER BY n), 'UTF8')
    FROM unnest(ARRAY[
        a.chain_seq::text, a.id::text, a.operator_id::text, a.subject_id::text, a.action,
        array_to_string(a.fields, ','), a.purpose, a.request_reference,
        (extract(epoch FROM a.at) * 1000000)::bigint::text
    ]) WITH ORDINALITY AS t(f, n)
$$;

CREATE FUNCTION audit_log_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_log%ROWTYPE;
BEGIN
    -- One writer at a time until its commit, so each row links to the last committed
    -- one (a volatile function's queries see what committed while it waited). The
    -- unique chain_seq turns any fork into an error rather than a silent branch.
    PERFORM pg_advisory_xact_lock(hashtext('audit_log_chain'));
    SELECT * INTO head FROM audit_log WHERE chain_seq IS NOT NULL
        ORDER BY chain_seq DESC LIMIT 1;
    NEW.chain_seq := coalesce(head.chain_seq, 0) + 1;
    NEW.chain := sha256(coalesce(head.chain, ''::bytea) || audit_log_canonical(NEW));
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_log_link BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_link();

-- Rows written before the chain existed are linked now, oldest first (a one-off: the
-- append-only trigger is set aside for this transaction's backfill only).
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete;
DO $$
DECLARE
    r audit_log%ROWTYPE;
    previous bytea := ''::bytea;
    seq bigint := 0;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        seq := seq + 1;
        r.chain_seq := seq;
        previous := sha256(previous || audit_log_canonical(r));
        UPDATE audit_log SET chain_seq = seq, chain = previous WHERE id = r.id;
    END LOOP;
END;
$$;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete;
ALTER TABLE audit_log ALTER COLUMN chain_seq SET NOT NULL, ALTER COLUMN chain SET NOT NULL;
