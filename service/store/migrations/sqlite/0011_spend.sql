-- Fair and bounded spending (issue 19): claims shared across tenants, each job's price estimate
-- and its reservation, spend totals per batch and per tenant-day and tenant-month, tenants' own
-- caps, and the balance guard's state (any replica's API and /readyz read it).

ALTER TABLE batches ADD COLUMN max_spend_usd REAL;
ALTER TABLE batches ADD COLUMN on_budget TEXT NOT NULL DEFAULT 'wait';  -- wait | fail
ALTER TABLE jobs ADD COLUMN est_usd REAL;       -- the preflight's estimate of the job's price
ALTER TABLE jobs ADD COLUMN reserved_usd REAL;  -- held against the caps for the live attempt, until settled
ALTER TABLE jobs ADD COLUMN reserved_at REAL;   -- when: names the day and month the spend counts to

-- The fair claim walks tenants with queued work one index seek each, then each tenant's queue in
-- order: it never reads every queued job (per-tenant in-flight counts walk jobs_in_flight).
CREATE INDEX jobs_tenant_queued ON jobs (tenant, not_before, created_at, seq) WHERE state = 'queued';
-- The fetcher's claim takes tenants in turns the same way.
CREATE INDEX jobs_tenant_fetching ON jobs (tenant, lease_until) WHERE state = 'fetching';

-- Committed spend (reservations plus settled prices) per scope: 'batch' (key: batch id), 'day'
-- (tenant:YYYY-MM-DD, UTC) and 'month' (tenant:YYYY-MM). Changed only with the job row that moves it.
CREATE TABLE spend (
    scope  TEXT NOT NULL,
    key    TEXT NOT NULL,
    usd    REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key)
);

CREATE TABLE tenant_budgets (
    tenant       TEXT PRIMARY KEY,
    daily_usd    REAL,
    monthly_usd  REAL,
    updated_at   REAL NOT NULL
);

CREATE TABLE account_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    paused       INTEGER NOT NULL,
    reason       TEXT,
    balance_usd  REAL,
    checked_at   REAL NOT NULL
);
