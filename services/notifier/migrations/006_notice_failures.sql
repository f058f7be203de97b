-- The scheduler, the email planner and the inbox-outcome publisher each take the oldest
-- notice needing work. A notice whose work raises (a bug, bad stored data) would be taken
-- again at once, for ever, holding up every notice behind it: a breach notice's emails
-- too. Its failure is recorded here and it is held back a while (holds.py), so the loops
-- go on with the others; it is retried after the hold, never dropped.
ALTER TABLE notices ADD COLUMN failures integer NOT NULL DEFAULT 0;  -- in a row; 0 once it went
-- The exception's type and a short, redacted message: operators read it, so no personal data.
ALTER TABLE notices ADD COLUMN last_failure text;
ALTER TABLE notices ADD COLUMN held_until timestamptz;  -- the loops skip it until then
-- The loops' partial indexes (notices_scheduled, notices_email_unplanned,
-- notices_inbox_outcomes) hold only the few notices with work pending, so held ones are
-- filtered out while walking them: those indexes stay as they are.
