"""Every SQL statement of the PostgreSQL store, in one place (the callbacks' are in pg_callbacks.py)."""

from __future__ import annotations

from service.states import IN_FLIGHT, TERMINAL
from service.store import rows
from service.store.base import JOB_COLUMNS, MUTABLE_COLUMNS

JOB_COLS = ", ".join(JOB_COLUMNS)
_TERMINAL = rows.sql_states(TERMINAL)
_IN_FLIGHT = rows.sql_states(IN_FLIGHT)
MUTABLE = tuple(c for c in JOB_COLUMNS if c in MUTABLE_COLUMNS)
_BATCH_COLS = "id, tenant, callback_url, idempotency_key, request_hash, total, created_at"
_TASK_COLS = "task_id, job_id, attempt, origin, status, created_at, updated_at"

SELECT_JOB = f"SELECT {JOB_COLS} FROM jobs WHERE id = $1"
LOCK_JOBS = f"SELECT {JOB_COLS} FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
SELECT_TASKS = f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ANY($1::text[])"
# Every changed job is written whole, guarded by the state read under the row lock.
UPDATE_JOB = (
    "UPDATE jobs SET state = $1, updated_at = $2, "
    + ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(MUTABLE))
    + f" WHERE id = ${len(MUTABLE) + 3} AND state = ${len(MUTABLE) + 4}"
)
UPSERT_TASK = (
    f"INSERT INTO tasks ({_TASK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
    "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at"
)
INSERT_EVENT = (
    "INSERT INTO events (job_id, at, event, from_state, to_state, source, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
INSERT_ARTIFACT = (
    "INSERT INTO artifacts VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
    "ON CONFLICT (job_id, idx) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes, "
    "width = excluded.width, height = excluded.height, path = excluded.path, "
    "source_url = excluded.source_url, content_type = excluded.content_type, created_at = excluded.created_at"
)
SELECT_JOB_TASKS = f"SELECT {_TASK_COLS} FROM tasks WHERE job_id = $1 ORDER BY attempt, created_at"
SELECT_EVENTS = (
    "SELECT id, job_id, at, event, from_state, to_state, source, detail FROM events WHERE job_id = $1 ORDER BY id"
)
SELECT_ARTIFACTS = (
    "SELECT job_id, idx, sha256, bytes, width, height, path, source_url, content_type, created_at "
    "FROM artifacts WHERE job_id = $1 ORDER BY idx"
)
SELECT_BATCH = f"SELECT {_BATCH_COLS} FROM batches WHERE id = $1"
SELECT_BATCH_BY_KEY = f"SELECT {_BATCH_COLS} FROM batches WHERE tenant = $1 AND idempotency_key = $2"
INSERT_BATCH = f"INSERT INTO batches ({_BATCH_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
INSERT_JOB = (
    "INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, "
    "metadata, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11)"
)
BATCH_JOBS = f"SELECT {JOB_COLS} FROM jobs WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
BATCH_JOBS_IN_STATE = (
    f"SELECT {JOB_COLS} FROM jobs WHERE batch_id = $1 AND state = $2 AND seq > $3 ORDER BY seq LIMIT $4"
)
# Newest first, from a (created_at, id) key: index batches_tenant_created (migration 0003).
TENANT_BATCHES = (
    f"SELECT {_BATCH_COLS} FROM batches WHERE tenant = $1 AND (created_at, id) < ($2, $3) "
    "ORDER BY created_at DESC, id DESC LIMIT $4"
)
BATCHES_COUNTS = (
    "SELECT batch_id, state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = ANY($1::text[]) "
    "GROUP BY batch_id, state"
)
BATCH_COUNTS = "SELECT state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = $1 GROUP BY state"
COUNT_IN_FLIGHT = f"SELECT count(*) FROM jobs WHERE state IN ({_IN_FLIGHT})"
COUNT_FETCHING = "SELECT count(*) FROM jobs WHERE state = 'fetching'"
# Claimers of queued work take turns (transaction advisory lock), so the in-flight cap holds
# across replicas: two of them can never both see the same room.
CLAIM_LOCK = "SELECT pg_advisory_xact_lock(727001)"
CLAIM_QUEUED = (
    f"UPDATE jobs SET state = 'submitting', lease_owner = $1, lease_until = $2, updated_at = $3 "
    f"WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= $3 "
    f"ORDER BY not_before, created_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLS}"
)
CLAIM_FETCHING = (
    f"UPDATE jobs SET lease_owner = $1, lease_until = $2, updated_at = $3 "
    f"WHERE id IN (SELECT id FROM jobs WHERE state = 'fetching' AND lease_until < $3 "
    f"ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLS}"
)
CLAIM_DUE = (
    f"UPDATE jobs SET next_check_at = $1 WHERE id IN (SELECT id FROM jobs "
    f"WHERE state IN ('submitted', 'unknown') AND next_check_at <= $2 ORDER BY next_check_at LIMIT $3 "
    f"FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLS}"
)
STALE_LEASES = (
    f"SELECT {JOB_COLS} FROM jobs WHERE state = 'submitting' AND lease_until < $1 ORDER BY lease_until LIMIT $2"
)
AGED_JOBS = (
    f"SELECT {JOB_COLS} FROM jobs WHERE state NOT IN ({_TERMINAL}) AND created_at < $1 ORDER BY created_at LIMIT $2"
)
JOB_COUNTS = "SELECT state, count(*) FROM jobs GROUP BY state"
FLOW_COUNTS = (
    "SELECT "
    " (SELECT count(*) FROM events WHERE event = 'completed' AND source = 'webhook'),"
    " (SELECT count(*) FROM events WHERE event = 'completed' AND source = 'poll'),"
    " (SELECT count(*) FROM tasks WHERE origin = 'adopted'),"
    " (SELECT count(*) FROM tasks),"
    " (SELECT count(DISTINCT job_id) FROM tasks),"
    " (SELECT count(*) FROM events WHERE event = 'ambiguous')"
)
INSERT_KEY = (
    "INSERT INTO api_keys (key_hash, tenant, label, created_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (key_hash) DO UPDATE SET tenant = excluded.tenant, label = excluded.label"
)
SELECT_KEY = "SELECT tenant FROM api_keys WHERE key_hash = $1"
NOTIFY = "SELECT pg_notify('segflow', $1)"
MIGRATION_LOCK = "SELECT pg_advisory_lock(727000)"
CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at double precision)"
)
MIGRATION_UNLOCK = "SELECT pg_advisory_unlock(727000)"

# retention (the pruner; migration 0009) ------------------------------------------------------
PRUNED_JOB = "SELECT id, tenant, batch_id, pruned_at FROM pruned_jobs WHERE id = $1"
PRUNED_BATCH = "SELECT id, tenant, '', pruned_at FROM pruned_batches WHERE id = $1"
PRUNED_MASKS_OF_JOB = "SELECT idx, pruned_at FROM pruned_masks WHERE job_id = $1"
MASKS_WATERMARK = "SELECT coalesce(max(artifact_created_at), 0) FROM pruned_masks"
EXPIRED_MASKS = (
    "SELECT a.job_id, a.idx, a.path, a.created_at FROM artifacts a "
    "WHERE a.created_at >= $1 AND a.created_at < $2 "
    "AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx) "
    "ORDER BY a.created_at LIMIT $3"
)
INSERT_PRUNED_MASK = (
    "INSERT INTO pruned_masks (job_id, idx, artifact_created_at, pruned_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT DO NOTHING"
)
EXPIRED_JOBS = f"SELECT id FROM jobs WHERE state IN ({_TERMINAL}) AND finished_at < $1 ORDER BY finished_at LIMIT $2"
UNPRUNED_MASKS_OF_JOBS = (
    "SELECT a.path FROM artifacts a WHERE a.job_id = ANY($1::text[]) "
    "AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx)"
)
# One statement: the jobs still expired (re-checked under their row locks, skipping any a
# transition holds), their rows in every table, and a tombstone each.
DELETE_JOBS = f"""
WITH doomed AS (
  SELECT id, tenant, batch_id FROM jobs
   WHERE id = ANY($1::text[]) AND state IN ({_TERMINAL}) AND finished_at < $2
   FOR UPDATE SKIP LOCKED),
 e AS (DELETE FROM events WHERE job_id IN (SELECT id FROM doomed)),
 t AS (DELETE FROM tasks WHERE job_id IN (SELECT id FROM doomed)),
 a AS (DELETE FROM artifacts WHERE job_id IN (SELECT id FROM doomed)),
 p AS (DELETE FROM pruned_masks WHERE job_id IN (SELECT id FROM doomed)),
 tomb AS (INSERT INTO pruned_jobs SELECT id, tenant, batch_id, $3::float8 FROM doomed ON CONFLICT DO NOTHING)
DELETE FROM jobs WHERE id IN (SELECT id FROM doomed)
"""
DELETE_EMPTY_BATCHES = """
WITH doomed AS (
  SELECT b.id, b.tenant FROM batches b
   WHERE b.created_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)
   ORDER BY b.created_at LIMIT $2 FOR UPDATE SKIP LOCKED),
 tomb AS (INSERT INTO pruned_batches SELECT id, tenant, $3::float8 FROM doomed ON CONFLICT DO NOTHING)
DELETE FROM batches WHERE id IN (SELECT id FROM doomed)
"""
EXPIRED_OUTBOX = (
    "SELECT o.id FROM outbox o WHERE o.created_at < $1 "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.state = 'pending') "
    "ORDER BY o.created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
LOCK_FINISHED_DELIVERIES = (
    "SELECT id FROM deliveries WHERE event_id = ANY($1::text[]) AND state <> 'pending' ORDER BY id FOR UPDATE"
)
DELETE_ATTEMPTS = "DELETE FROM delivery_attempts WHERE delivery_id = ANY($1::bigint[])"
DELETE_DELIVERIES = "DELETE FROM deliveries WHERE id = ANY($1::bigint[])"
DELETE_OUTBOX = (
    "DELETE FROM outbox WHERE id = ANY($1::text[]) "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id)"
)
LIVE_IMAGES = f"SELECT DISTINCT image FROM jobs WHERE state NOT IN ({_TERMINAL}) AND image LIKE '%/inputs/%'"
COUNT_EXPIRED_MASKS = (
    "SELECT count(*), coalesce(sum(a.bytes), 0) FROM artifacts a WHERE a.created_at >= $1 AND a.created_at < $2 "
    "AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx)"
)
COUNT_EXPIRED_JOBS = f"SELECT count(*) FROM jobs WHERE state IN ({_TERMINAL}) AND finished_at < $1"
COUNT_EXPIRED_EVENTS = (
    f"SELECT count(*) FROM events WHERE job_id IN "
    f"(SELECT id FROM jobs WHERE state IN ({_TERMINAL}) AND finished_at < $1)"
)
COUNT_EXPIRED_OUTBOX = (
    "SELECT count(*) FROM outbox o WHERE o.created_at < $1 "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.state = 'pending')"
)
