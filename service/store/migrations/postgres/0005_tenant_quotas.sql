-- Per-tenant usage counters for quotas (upload bytes per day, batch requests per minute), kept in
-- the store so that every replica counts against the same limit.
CREATE TABLE tenant_usage (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    window_start DOUBLE PRECISION NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (tenant, kind, window_start)
);
-- A tenant's unfinished jobs, counted against its queued-jobs quota when a batch arrives.
CREATE INDEX jobs_tenant_open ON jobs (tenant)
    WHERE state IN ('queued', 'submitting', 'unknown', 'submitted', 'fetching');
