-- 'retention': the accounts worker asked for the erasure of a sign-up never completed
-- within its lapse period (SignupLapsed). No one can cancel it: the account could
-- never be signed in to.
ALTER TABLE deletion_requests DROP CONSTRAINT deletion_requests_initiated_by_check;
ALTER TABLE deletion_requests ADD CONSTRAINT deletion_requests_initiated_by_check
    CHECK (initiated_by IN ('user', 'operator', 'retention'));
