-- Fewer indexes for a state change to rewrite (issue 14). Every partial index whose WHERE names
-- `state` is rewritten by each transition that enters or leaves it; a job now sits in at most two
-- at a time (one when final), and every query keeps an index to walk:
--   jobs_live (state, created_at, tenant), every live job: the in-flight counts and each tenant's
--     in-flight jobs (claim_queued, open_jobs), the gauges, the reconciler's aged and stale sweeps
--     (per state, oldest first) and the inputs the pruner must keep. It replaces jobs_in_flight,
--     jobs_live_age, jobs_tenant_open and the submitting-lease index (submitting jobs are few: they
--     count against the in-flight cap), and jobs_queued, which no query read since
--     jobs_tenant_queued (0011).
--   Unchanged: jobs_tenant_queued, jobs_tenant_fetching (also count_fetching), jobs_due, jobs_finished.

DROP INDEX jobs_queued;
DROP INDEX jobs_in_flight;
DROP INDEX jobs_live_age;
DROP INDEX jobs_tenant_open;
DROP INDEX jobs_fetching_lease;
DROP INDEX jobs_submitting_lease;
CREATE INDEX jobs_live ON jobs (state, created_at, tenant)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');
