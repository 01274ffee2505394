-- segflow schema, version 1 (PostgreSQL). Times are unix seconds (double precision), so rows
-- decode the same way as on SQLite.

CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,          -- sha256 hex of the bearer key; the key itself is never stored
    tenant      text NOT NULL,
    label       text NOT NULL DEFAULT '',
    created_at  double precision NOT NULL
);

CREATE TABLE batches (
    id               text PRIMARY KEY,
    tenant           text NOT NULL,
    callback_url     text,
    idempotency_key  text,
    request_hash     text NOT NULL,
    total            integer NOT NULL,
    created_at       double precision NOT NULL,
    UNIQUE (tenant, idempotency_key)
);

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    batch_id         text NOT NULL REFERENCES batches (id),
    tenant           text NOT NULL,
    seq              integer NOT NULL,
    image            text NOT NULL,
    prompt           text NOT NULL,
    negative_prompt  text NOT NULL,
    segment_factor   integer NOT NULL,
    metadata         text,
    state            text NOT NULL,
    attempt          integer NOT NULL DEFAULT 1,
    task_id          text,
    lease_owner      text,
    lease_until      double precision,
    not_before       double precision NOT NULL DEFAULT 0,
    next_check_at    double precision,
    submit_tries     integer NOT NULL DEFAULT 0,
    poll_count       integer NOT NULL DEFAULT 0,
    submitted_at     double precision,
    unknown_since    double precision,
    completed_at     double precision,
    output_urls      text NOT NULL DEFAULT '[]',
    error_code       text,
    error_message    text,
    pixels           bigint,
    price_usd        double precision,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    finished_at      double precision
);

CREATE INDEX jobs_batch ON jobs (batch_id, seq);
CREATE INDEX jobs_queued ON jobs (not_before, created_at) WHERE state = 'queued';
CREATE INDEX jobs_in_flight ON jobs (state) WHERE state IN ('submitting', 'unknown', 'submitted');
CREATE INDEX jobs_due ON jobs (next_check_at) WHERE state IN ('submitted', 'unknown');
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state IN ('submitting', 'fetching');
CREATE INDEX jobs_live_age ON jobs (created_at)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');

CREATE TABLE tasks (
    task_id     text PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id),
    attempt     integer NOT NULL,
    origin      text NOT NULL,             -- created | adopted | orphan
    status      text NOT NULL,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);
CREATE INDEX tasks_job ON tasks (job_id, attempt);

CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    job_id      text NOT NULL,
    at          double precision NOT NULL,
    event       text NOT NULL,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    source      text NOT NULL,
    detail      text
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE artifacts (
    job_id        text NOT NULL REFERENCES jobs (id),
    idx           integer NOT NULL,
    sha256        text NOT NULL,
    bytes         bigint NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    path          text NOT NULL,
    source_url    text NOT NULL,
    content_type  text NOT NULL,
    created_at    double precision NOT NULL,
    PRIMARY KEY (job_id, idx)
);
