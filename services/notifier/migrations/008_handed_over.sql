-- When an email was handed to the SMTP server (its DATA begun) under the current lease.
-- Written and committed before DATA, so a worker that dies afterwards leaves the mark:
-- the delivery is then in doubt (the server may have taken it) and is never sent again
-- on its own. Cleared when an attempt ends in a retry; kept on finished deliveries.
ALTER TABLE deliveries ADD COLUMN handed_over_at timestamptz;
