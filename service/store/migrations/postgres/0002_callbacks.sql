-- Outbound callbacks: an outbox written in the same transaction as the job change that causes
-- each event, and one delivery row per destination (the batch's callback_url, subscriptions).

CREATE TABLE subscriptions (
    id               text PRIMARY KEY,
    tenant           text NOT NULL,
    url              text NOT NULL,
    event_types      text NOT NULL,            -- JSON list; empty means every type
    ed25519       boolean NOT NULL DEFAULT false,
    created_at       double precision NOT NULL,
    disabled_at      double precision,
    disabled_reason  text
);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant) WHERE disabled_at IS NULL;

CREATE TABLE outbox (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    type        text NOT NULL,
    batch_id    text NOT NULL,
    job_id      text,
    payload     text NOT NULL,
    created_at  double precision NOT NULL
);
CREATE INDEX outbox_tenant ON outbox (tenant, created_at);
CREATE INDEX outbox_batch ON outbox (batch_id);

CREATE TABLE deliveries (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL REFERENCES outbox (id),
    target       text NOT NULL,
    url          text NOT NULL,
    signer       text NOT NULL,
    ed25519   boolean NOT NULL DEFAULT false,
    state        text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_at      double precision NOT NULL,
    lease_owner  text,
    lease_until  double precision,
    last_status  integer,
    last_error   text,
    created_at   double precision NOT NULL,
    finished_at  double precision,
    UNIQUE (event_id, target)
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
CREATE INDEX deliveries_target ON deliveries (target, state, created_at);
CREATE INDEX deliveries_busy ON deliveries (url, lease_until) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id  bigint NOT NULL REFERENCES deliveries (id),
    n            integer NOT NULL,
    at           double precision NOT NULL,
    status       integer,
    duration_ms  double precision NOT NULL,
    error        text,
    PRIMARY KEY (delivery_id, n)
);
