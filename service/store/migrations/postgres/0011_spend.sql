-- Fair and bounded spending (issue 19): claims shared across tenants, each job's price estimate
-- and its reservation, spend totals per batch and per tenant-day and tenant-month, tenants' own
-- caps, and the balance guard's state (any replica's API and /readyz read it).

ALTER TABLE batches ADD COLUMN max_spend_usd double precision;
ALTER TABLE batches ADD COLUMN on_budget text NOT NULL DEFAULT 'wait';  -- wait | fail
ALTER TABLE jobs ADD COLUMN est_usd double precision;       -- the preflight's estimate of the job's price
ALTER TABLE jobs ADD COLUMN reserved_usd double precision;  -- held against the caps for the live attempt
ALTER TABLE jobs ADD COLUMN reserved_at double precision;   -- names the day and month the spend counts to

-- The fair claim walks tenants with queued work one index seek each, then each tenant's queue in
-- order: it never reads every queued job (per-tenant in-flight counts walk jobs_in_flight).
CREATE INDEX jobs_tenant_queued ON jobs (tenant, not_before, created_at, seq) WHERE state = 'queued';
-- The fetcher's claim takes tenants in turns the same way.
CREATE INDEX jobs_tenant_fetching ON jobs (tenant, lease_until) WHERE state = 'fetching';

-- Committed spend (reservations plus settled prices) per scope: 'batch' (key: batch id), 'day'
-- (tenant:YYYY-MM-DD, UTC) and 'month' (tenant:YYYY-MM). Changed only with the job row that moves it.
CREATE TABLE spend (
    scope  text NOT NULL,
    key    text NOT NULL,
    usd    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key)
);

CREATE TABLE tenant_budgets (
    tenant       text PRIMARY KEY,
    daily_usd    double precision,
    monthly_usd  double precision,
    updated_at   double precision NOT NULL
);

CREATE TABLE account_state (
    id           integer PRIMARY KEY CHECK (id = 1),
    paused       boolean NOT NULL,
    reason       text,
    balance_usd  double precision,
    checked_at   double precision NOT NULL
);
