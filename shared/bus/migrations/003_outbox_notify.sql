-- The relay LISTENs on bus_outbox to publish new rows at once. A statement trigger sends
-- the notification for every insert, so a writer spends no round trip of its own on it
-- and none can forget it. Notifications are delivered at commit (the relay wakes for
-- rows it can see), and repeats within one transaction fold into one.
CREATE FUNCTION bus_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bus_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER bus_outbox_notify AFTER INSERT ON bus_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION bus_outbox_notify();
