-- Callback etiquette (issue 18) and amplification limits (issue 13): subscriptions can be paused,
-- get their own secret generation (with an overlap during which the previous one still signs),
-- and remember since when they have been failing; each delivery knows its endpoint's origin
-- (scheme, host, port), which the per-endpoint limit and the slow-down are keyed on.
-- segflow_origin() is registered on every connection by the store (service/callback_origin.py).

ALTER TABLE subscriptions ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN secret_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN previous_secret_until REAL;
ALTER TABLE subscriptions ADD COLUMN failing_since REAL;

ALTER TABLE deliveries ADD COLUMN origin TEXT;
UPDATE deliveries SET origin = segflow_origin(url);
CREATE INDEX deliveries_origin_busy ON deliveries (origin, lease_until) WHERE state = 'pending';

-- An endpoint that answered 429/502/503/504 is left alone until not_before; the pause doubles
-- while it keeps answering so and is forgotten on its first 2xx.
CREATE TABLE endpoint_backoff (
    origin      TEXT PRIMARY KEY,
    not_before  REAL NOT NULL,
    penalty_s   REAL NOT NULL
);

-- GET /v1/events pages newest first with ties on created_at broken by id.
CREATE INDEX outbox_tenant_newest ON outbox (tenant, created_at, id);
CREATE INDEX outbox_tenant_type ON outbox (tenant, type, created_at, id);
