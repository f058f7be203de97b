-- 100 consecutive failed logins lock an account until a password reset (NIST SP
-- 800-63B). The lock was only the throttle counter's, which the retention sweep deletes
-- once no failure came for 180 days (the fraud_abuse period; a locked counter counts no
-- more failures, so its date stood still): the guesser then had 100 more. The lock is
-- now the account's own, gone with the account at its erasure; the counter still ages
-- out as the fraud_abuse rule says (and one for an address no account has, too).
ALTER TABLE users ADD COLUMN login_locked boolean NOT NULL DEFAULT false;
