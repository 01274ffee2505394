-- Retention (the pruner role): tombstones so a pruned job or batch answers 410 Gone rather than
-- 404, a record of masks whose object was deleted (the artifact row keeps its sha256 and size),
-- and the indexes the pruner's small batches walk instead of scanning whole tables.

CREATE TABLE pruned_jobs (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    batch_id    TEXT NOT NULL,
    pruned_at   REAL NOT NULL
);

CREATE TABLE pruned_batches (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    pruned_at   REAL NOT NULL
);

CREATE TABLE pruned_masks (
    job_id               TEXT NOT NULL,
    idx                  INTEGER NOT NULL,
    artifact_created_at  REAL NOT NULL,     -- the pruner resumes after the newest one pruned
    pruned_at            REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX pruned_masks_created ON pruned_masks (artifact_created_at);

CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');
CREATE INDEX artifacts_created ON artifacts (created_at);
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX batches_created ON batches (created_at);
