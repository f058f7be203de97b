-- A replaced address kept for its one email (previous_addresses) holds its suppression
-- too (store.forget_lapsed_suppressions): when that row goes, with the email's outcome
-- or a sweep, the address was held until then, and its period starts again (027 covers
-- the contacts alone: counted from the move, the period ended up to 30 days early).
CREATE FUNCTION suppressions_previous_address_left() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE suppressions SET asserted_at = now()
    WHERE email_index = OLD.email_index AND asserted_at < now();
    RETURN NULL;
END
$$;

CREATE TRIGGER previous_addresses_address_left AFTER DELETE ON previous_addresses
    FOR EACH ROW EXECUTE FUNCTION suppressions_previous_address_left();
