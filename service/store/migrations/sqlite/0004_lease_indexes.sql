-- SQLite uses a partial index only when the query's WHERE implies the index's, and it does not
-- read `state = 'fetching'` as implying `state IN ('submitting', 'fetching')`: the fetcher's claim
-- and the stale-lease sweep scanned the whole jobs table. One index per leased state instead.

DROP INDEX jobs_leased;
CREATE INDEX jobs_fetching_lease ON jobs (lease_until) WHERE state = 'fetching';
CREATE INDEX jobs_submitting_lease ON jobs (lease_until) WHERE state = 'submitting';
