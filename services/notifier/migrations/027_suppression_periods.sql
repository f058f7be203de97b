-- A suppression's retention period (retention.toml, suppression_list) counts from the
-- last time it was asserted: recorded, recorded again, or last held by an account (its
-- address was a contact's, a guardian's or a pending one until the account moved or was
-- erased). Counted from when it was recorded, a suppression kept in force by an address
-- in use would lapse while it still stops that address's mail.
-- Rows here before this migration get its time, without a rewrite (a constant default):
-- nobody knows when their address was last held, so their period starts now.
ALTER TABLE suppressions ADD COLUMN asserted_at timestamptz NOT NULL DEFAULT now();

-- Every way an address leaves the contacts (a card naming another one, the erasure, a
-- tombstone, the sweeps) ends in one of these two statements: the trigger sees them all.
-- An address no one held any more was held until now, whichever of the row's it was.
CREATE FUNCTION suppressions_address_left() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE suppressions SET asserted_at = now()
    WHERE email_index IN (OLD.email_index, OLD.guardian_index, OLD.pending_index)
      AND asserted_at < now();
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_address_left AFTER DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION suppressions_address_left();
-- A card upserted with the same addresses (most are) touches no suppression.
CREATE TRIGGER contacts_address_changed
    AFTER UPDATE OF email_index, guardian_index, pending_index ON contacts
    FOR EACH ROW
    WHEN (OLD.email_index IS DISTINCT FROM NEW.email_index
          OR OLD.guardian_index IS DISTINCT FROM NEW.guardian_index
          OR OLD.pending_index IS DISTINCT FROM NEW.pending_index)
    EXECUTE FUNCTION suppressions_address_left();
