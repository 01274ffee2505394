-- Outbound callbacks: an outbox written in the same transaction as the job change that causes
-- each event, and one delivery row per destination (the batch's callback_url, subscriptions).

CREATE TABLE subscriptions (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,            -- JSON list; empty means every type
    ed25519       INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    disabled_at      REAL,
    disabled_reason  TEXT
);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant) WHERE disabled_at IS NULL;

CREATE TABLE outbox (
    id          TEXT PRIMARY KEY,              -- the event id, sent as webhook-id on every delivery
    tenant      TEXT NOT NULL,
    type        TEXT NOT NULL,                 -- job.succeeded | job.failed | job.cancelled | job.expired | batch.completed
    batch_id    TEXT NOT NULL,
    job_id      TEXT,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX outbox_tenant ON outbox (tenant, created_at);
CREATE INDEX outbox_batch ON outbox (batch_id);

CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL REFERENCES outbox (id),
    target       TEXT NOT NULL,                -- a subscription id, or 'batch' for the batch's callback_url
    url          TEXT NOT NULL,
    signer       TEXT NOT NULL,                -- whose secret signs: the subscription id or 'tenant:<name>'
    ed25519   INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,                -- pending | delivered | dead
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    lease_owner  TEXT,
    lease_until  REAL,
    last_status  INTEGER,
    last_error   TEXT,
    created_at   REAL NOT NULL,
    finished_at  REAL,
    UNIQUE (event_id, target)
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
CREATE INDEX deliveries_target ON deliveries (target, state, created_at);
CREATE INDEX deliveries_busy ON deliveries (url, lease_until) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id  INTEGER NOT NULL REFERENCES deliveries (id),
    n            INTEGER NOT NULL,
    at           REAL NOT NULL,
    status       INTEGER,
    duration_ms  REAL NOT NULL,
    error        TEXT,
    PRIMARY KEY (delivery_id, n)
);
