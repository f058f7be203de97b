-- The relay polls the outbox instead of being woken by 003's NOTIFY trigger.
-- PostgreSQL makes every transaction that sent a NOTIFY commit in turn: it takes one
-- cluster-wide lock before its commit and keeps it until the commit is flushed, so the
-- notification queue holds commit order. With the trigger, every write that queued an
-- event (in every service's database on the cluster) waited for the one before it to
-- commit: under 32 concurrent profile edits most were waiting on that lock (seen in
-- pg_stat_activity as wait_event_type 'Lock', wait_event 'object').
DROP TRIGGER IF EXISTS bus_outbox_notify ON bus_outbox;
DROP FUNCTION IF EXISTS bus_outbox_notify();
