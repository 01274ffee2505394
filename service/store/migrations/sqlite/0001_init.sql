-- segflow schema, version 1 (SQLite). Times are unix seconds (REAL).

CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,          -- sha256 hex of the bearer key; the key itself is never stored
    tenant      TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL
);

CREATE TABLE batches (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    callback_url     TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    total            INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    UNIQUE (tenant, idempotency_key)
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    batch_id         TEXT NOT NULL REFERENCES batches (id),
    tenant           TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    image            TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    negative_prompt  TEXT NOT NULL,
    segment_factor   INTEGER NOT NULL,
    metadata         TEXT,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 1,
    task_id          TEXT,
    lease_owner      TEXT,
    lease_until      REAL,
    not_before       REAL NOT NULL DEFAULT 0,
    next_check_at    REAL,
    submit_tries     INTEGER NOT NULL DEFAULT 0,
    poll_count       INTEGER NOT NULL DEFAULT 0,
    submitted_at     REAL,
    unknown_since    REAL,
    completed_at     REAL,
    output_urls      TEXT NOT NULL DEFAULT '[]',
    error_code       TEXT,
    error_message    TEXT,
    pixels           INTEGER,
    price_usd        REAL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    finished_at      REAL
);

CREATE INDEX jobs_batch ON jobs (batch_id, seq);
CREATE INDEX jobs_queued ON jobs (not_before) WHERE state = 'queued';
CREATE INDEX jobs_in_flight ON jobs (state) WHERE state IN ('submitting', 'unknown', 'submitted');
CREATE INDEX jobs_due ON jobs (next_check_at) WHERE state IN ('submitted', 'unknown');
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state IN ('submitting', 'fetching');
CREATE INDEX jobs_live_age ON jobs (created_at)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');

CREATE TABLE tasks (
    task_id     TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    origin      TEXT NOT NULL,             -- created | adopted | orphan
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX tasks_job ON tasks (job_id, attempt);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    at          REAL NOT NULL,
    event       TEXT NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    source      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE artifacts (
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    idx           INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    path          TEXT NOT NULL,
    source_url    TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
