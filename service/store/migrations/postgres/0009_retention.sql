-- Retention (the pruner role): tombstones so a pruned job or batch answers 410 Gone rather than
-- 404, a record of masks whose object was deleted (the artifact row keeps its sha256 and size),
-- and the indexes the pruner's small batches walk instead of scanning whole tables.

CREATE TABLE pruned_jobs (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    batch_id    text NOT NULL,
    pruned_at   double precision NOT NULL
);

CREATE TABLE pruned_batches (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    pruned_at   double precision NOT NULL
);

CREATE TABLE pruned_masks (
    job_id               text NOT NULL,
    idx                  integer NOT NULL,
    artifact_created_at  double precision NOT NULL,     -- the pruner resumes after the newest one pruned
    pruned_at            double precision NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX pruned_masks_created ON pruned_masks (artifact_created_at);

CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');
CREATE INDEX artifacts_created ON artifacts (created_at);
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX batches_created ON batches (created_at);
