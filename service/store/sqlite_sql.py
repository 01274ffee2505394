"""Every SQL statement of the SQLite store, in one place (the callbacks' are in sqlite_callbacks.py)."""

from __future__ import annotations

from service.states import IN_FLIGHT, TERMINAL
from service.store import rows

JOB_COLS = ", ".join(rows.JOB_COLUMNS)
_TERMINAL = rows.sql_states(TERMINAL)
_IN_FLIGHT = rows.sql_states(IN_FLIGHT)

SELECT_JOB = f"SELECT {JOB_COLS} FROM jobs WHERE id = ?"
SELECT_TASK = "SELECT task_id, job_id, attempt, origin, status, created_at, updated_at FROM tasks WHERE task_id = ?"
SELECT_JOB_TASKS = (
    "SELECT task_id, job_id, attempt, origin, status, created_at, updated_at FROM tasks "
    "WHERE job_id = ? ORDER BY attempt, created_at"
)
SELECT_EVENTS = (
    "SELECT id, job_id, at, event, from_state, to_state, source, detail FROM events WHERE job_id = ? ORDER BY id"
)
SELECT_ARTIFACTS = (
    "SELECT job_id, idx, sha256, bytes, width, height, path, source_url, content_type, created_at "
    "FROM artifacts WHERE job_id = ? ORDER BY idx"
)
_BATCH_COLS = "id, tenant, callback_url, idempotency_key, request_hash, total, created_at"
SELECT_BATCH = f"SELECT {_BATCH_COLS} FROM batches WHERE id = ?"
SELECT_BATCH_BY_KEY = (
    "SELECT id, tenant, callback_url, idempotency_key, request_hash, total, created_at FROM batches "
    "WHERE tenant = ? AND idempotency_key = ?"
)
INSERT_BATCH = "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)"
INSERT_JOB = (
    "INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, "
    "metadata, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)"
)
INSERT_EVENT = (
    "INSERT INTO events (job_id, at, event, from_state, to_state, source, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_TASK = (
    "INSERT INTO tasks (task_id, job_id, attempt, origin, status, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at"
)
INSERT_ARTIFACT = "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
BATCH_JOBS = f"SELECT {JOB_COLS} FROM jobs WHERE batch_id = ? AND seq > ? ORDER BY seq LIMIT ?"
BATCH_JOBS_IN_STATE = f"SELECT {JOB_COLS} FROM jobs WHERE batch_id = ? AND state = ? AND seq > ? ORDER BY seq LIMIT ?"
# Newest first, from a (created_at, id) key: index batches_tenant_created (migration 0003).
TENANT_BATCHES = (
    f"SELECT {_BATCH_COLS} FROM batches WHERE tenant = ? AND (created_at, id) < (?, ?) "
    "ORDER BY created_at DESC, id DESC LIMIT ?"
)
BATCHES_COUNTS = (
    "SELECT batch_id, state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id IN ({marks}) "
    "GROUP BY batch_id, state"
)
BATCH_COUNTS = "SELECT state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = ? GROUP BY state"
COUNT_IN_FLIGHT = f"SELECT count(*) FROM jobs WHERE state IN ({_IN_FLIGHT})"
COUNT_FETCHING = "SELECT count(*) FROM jobs WHERE state = 'fetching'"
CLAIM_QUEUED = (
    f"UPDATE jobs SET state = 'submitting', lease_owner = ?, lease_until = ?, updated_at = ? "
    f"WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ? "
    f"ORDER BY not_before, created_at LIMIT ?) RETURNING {JOB_COLS}"
)
CLAIM_FETCHING = (
    f"UPDATE jobs SET lease_owner = ?, lease_until = ?, updated_at = ? "
    f"WHERE id IN (SELECT id FROM jobs WHERE state = 'fetching' AND lease_until < ? "
    f"ORDER BY lease_until LIMIT ?) RETURNING {JOB_COLS}"
)
CLAIM_DUE = (
    f"UPDATE jobs SET next_check_at = ? WHERE id IN (SELECT id FROM jobs "
    f"WHERE state IN ('submitted', 'unknown') AND next_check_at <= ? ORDER BY next_check_at LIMIT ?) "
    f"RETURNING {JOB_COLS}"
)
STALE_LEASES = (
    f"SELECT {JOB_COLS} FROM jobs WHERE state = 'submitting' AND lease_until < ? ORDER BY lease_until LIMIT ?"
)
AGED_JOBS = (
    f"SELECT {JOB_COLS} FROM jobs WHERE state NOT IN ({_TERMINAL}) AND created_at < ? ORDER BY created_at LIMIT ?"
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
INSERT_KEY = "INSERT OR REPLACE INTO api_keys (key_hash, tenant, label, created_at) VALUES (?, ?, ?, ?)"
SELECT_KEY = "SELECT tenant FROM api_keys WHERE key_hash = ?"

# retention (the pruner; migration 0009) ------------------------------------------------------
# Id lists are passed as one JSON array (json_each), so each statement has one fixed text.
_IDS = "(SELECT value FROM json_each(?))"
PRUNED_JOB = "SELECT id, tenant, batch_id, pruned_at FROM pruned_jobs WHERE id = ?"
PRUNED_BATCH = "SELECT id, tenant, '', pruned_at FROM pruned_batches WHERE id = ?"
PRUNED_MASKS_OF_JOB = "SELECT idx, pruned_at FROM pruned_masks WHERE job_id = ?"
MASKS_WATERMARK = "SELECT coalesce(max(artifact_created_at), 0) FROM pruned_masks"
EXPIRED_MASKS = (
    "SELECT a.job_id, a.idx, a.path, a.created_at FROM artifacts a "
    "WHERE a.created_at >= ? AND a.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx) "
    "ORDER BY a.created_at LIMIT ?"
)
INSERT_PRUNED_MASK = (
    "INSERT OR IGNORE INTO pruned_masks (job_id, idx, artifact_created_at, pruned_at) VALUES (?, ?, ?, ?)"
)
EXPIRED_JOBS = f"SELECT id FROM jobs WHERE state IN ({_TERMINAL}) AND finished_at < ? ORDER BY finished_at LIMIT ?"
UNPRUNED_MASKS_OF_JOBS = (
    f"SELECT a.path FROM artifacts a WHERE a.job_id IN {_IDS} "
    "AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx)"
)
# Re-checked inside the deleting transaction: a job retried since it was listed is kept.
STILL_EXPIRED_JOBS = f"SELECT id FROM jobs WHERE id IN {_IDS} AND state IN ({_TERMINAL}) AND finished_at < ?"
DELETE_JOB_ROWS = (
    f"DELETE FROM events WHERE job_id IN {_IDS}",
    f"DELETE FROM tasks WHERE job_id IN {_IDS}",
    f"DELETE FROM artifacts WHERE job_id IN {_IDS}",
    f"DELETE FROM pruned_masks WHERE job_id IN {_IDS}",
)
TOMBSTONE_JOBS = f"INSERT OR IGNORE INTO pruned_jobs SELECT id, tenant, batch_id, ? FROM jobs WHERE id IN {_IDS}"
DELETE_JOBS = f"DELETE FROM jobs WHERE id IN {_IDS}"
EMPTY_BATCHES = (
    "SELECT b.id FROM batches b WHERE b.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id) ORDER BY b.created_at LIMIT ?"
)
TOMBSTONE_BATCHES = f"INSERT OR IGNORE INTO pruned_batches SELECT id, tenant, ? FROM batches WHERE id IN {_IDS}"
DELETE_BATCHES = f"DELETE FROM batches WHERE id IN {_IDS}"
EXPIRED_OUTBOX = (
    "SELECT o.id FROM outbox o WHERE o.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.state = 'pending') "
    "ORDER BY o.created_at LIMIT ?"
)
DELETE_OUTBOX_ROWS = (
    "DELETE FROM delivery_attempts WHERE delivery_id IN "
    f"(SELECT id FROM deliveries WHERE event_id IN {_IDS} AND state <> 'pending')",
    f"DELETE FROM deliveries WHERE event_id IN {_IDS} AND state <> 'pending'",
    f"DELETE FROM outbox WHERE id IN {_IDS} AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id)",
)
LIVE_IMAGES = f"SELECT DISTINCT image FROM jobs WHERE state NOT IN ({_TERMINAL}) AND image LIKE '%/inputs/%'"
COUNT_EXPIRED_MASKS = (
    "SELECT count(*), coalesce(sum(a.bytes), 0) FROM artifacts a WHERE a.created_at >= ? AND a.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx)"
)
COUNT_EXPIRED_JOBS = f"SELECT count(*) FROM jobs WHERE state IN ({_TERMINAL}) AND finished_at < ?"
COUNT_EXPIRED_EVENTS = (
    f"SELECT count(*) FROM events WHERE job_id IN "
    f"(SELECT id FROM jobs WHERE state IN ({_TERMINAL}) AND finished_at < ?)"
)
COUNT_EXPIRED_OUTBOX = (
    "SELECT count(*) FROM outbox o WHERE o.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.state = 'pending')"
)
