-- Every statement of the PostgreSQL store, by name (service/store/queries.py loads them;
-- sqlite.sql defines the same names). A list parameter is a text[].

-- name: create_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at double precision);

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations VALUES ($1, $2);

-- name: lock_migrations
-- Replicas starting together migrate one at a time.
SELECT pg_advisory_lock(727000);

-- name: unlock_migrations
SELECT pg_advisory_unlock(727000);

-- name: notify
-- Wakes the workers of every replica (each LISTENs on channel segflow).
SELECT pg_notify('segflow', $1);

-- name: select_job
SELECT * FROM jobs WHERE id = $1;

-- name: lock_jobs
-- The group's jobs, locked in id order (two groups never wait on each other in a cycle).
SELECT * FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE;

-- name: select_tasks
SELECT * FROM tasks WHERE task_id = ANY($1::text[]);

-- name: update_job
-- Every changed job is written whole, guarded by the state the group read. Over unnest(): the
-- driver sends the group's rows as one array per column, one statement for the whole group.
UPDATE jobs j SET state = u.state, updated_at = u.updated_at, attempt = u.attempt, task_id = u.task_id,
       lease_owner = u.lease_owner, lease_until = u.lease_until, not_before = u.not_before,
       next_check_at = u.next_check_at, submit_tries = u.submit_tries, poll_count = u.poll_count,
       submitted_at = u.submitted_at, unknown_since = u.unknown_since, completed_at = u.completed_at,
       output_urls = u.output_urls, error_code = u.error_code, error_message = u.error_message, pixels = u.pixels,
       price_usd = u.price_usd, finished_at = u.finished_at, sent_at = u.sent_at, est_usd = u.est_usd,
       reserved_usd = u.reserved_usd, reserved_at = u.reserved_at
  FROM unnest($1::text[], $2::float8[], $3::int[], $4::text[], $5::text[], $6::float8[], $7::float8[],
              $8::float8[], $9::int[], $10::int[], $11::float8[], $12::float8[], $13::float8[], $14::text[],
              $15::text[], $16::text[], $17::bigint[], $18::float8[], $19::float8[], $20::float8[], $21::float8[],
              $22::float8[], $23::float8[], $24::text[], $25::text[])
       AS u (state, updated_at, attempt, task_id, lease_owner, lease_until, not_before, next_check_at,
             submit_tries, poll_count, submitted_at, unknown_since, completed_at, output_urls, error_code,
             error_message, pixels, price_usd, finished_at, sent_at, est_usd, reserved_usd, reserved_at, id, was)
 WHERE j.id = u.id AND j.state = u.was;

-- name: upsert_task
-- The first timing learned of a task stays (a duplicate webhook or a later poll does not move it).
-- Over unnest() like update_job (a group names each task once: rows.plan_group).
INSERT INTO tasks (task_id, job_id, attempt, origin, status, created_at, updated_at, run_s, heard_after_s)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::float8[], $7::float8[],
                     $8::float8[], $9::float8[])
ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
       run_s = coalesce(tasks.run_s, excluded.run_s),
       heard_after_s = coalesce(tasks.heard_after_s, excluded.heard_after_s);

-- name: insert_event
-- Over unnest() like update_job, in the rows' order (event ids follow it).
INSERT INTO events (job_id, at, event, from_state, to_state, source, detail)
SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]);

-- name: insert_artifact
INSERT INTO artifacts (job_id, idx, sha256, bytes, width, height, path, source_url, content_type, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (job_id, idx) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes, width = excluded.width,
       height = excluded.height, path = excluded.path, source_url = excluded.source_url,
       content_type = excluded.content_type, created_at = excluded.created_at;

-- name: job_tasks
SELECT * FROM tasks WHERE job_id = $1 ORDER BY attempt, created_at;

-- name: job_events
SELECT * FROM events WHERE job_id = $1 ORDER BY id;

-- name: job_artifacts
SELECT * FROM artifacts WHERE job_id = $1 ORDER BY idx;

-- name: select_batch
SELECT * FROM batches WHERE id = $1;

-- name: select_batch_by_key
SELECT * FROM batches WHERE tenant = $1 AND idempotency_key = $2;

-- name: insert_batch
INSERT INTO batches (id, tenant, callback_url, idempotency_key, request_hash, total, created_at, max_spend_usd,
                     on_budget)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: insert_job
-- Over unnest() like update_job: a batch's jobs in one statement.
INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, metadata, state,
                  created_at, updated_at, trace_context)
SELECT id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, metadata, 'queued', at, at, trace
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::int[],
              $9::text[], $10::float8[], $11::text[])
       AS u (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, metadata, at, trace);

-- name: batch_jobs
SELECT * FROM jobs WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- name: batch_jobs_in_state
SELECT * FROM jobs WHERE batch_id = $1 AND state = $4 AND seq > $2 ORDER BY seq LIMIT $3;

-- name: tenant_batches
-- Newest first, from a (created_at, id) key: index batches_tenant_created (migration 0003).
SELECT * FROM batches WHERE tenant = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4;

-- name: batches_counts
SELECT batch_id, state, count(*) AS jobs, coalesce(sum(price_usd), 0) AS spend,
       coalesce(sum(reserved_usd), 0) AS reserved
  FROM jobs WHERE batch_id = ANY($1::text[]) GROUP BY batch_id, state;

-- name: count_in_flight
-- The states of states.IN_FLIGHT, counted in index jobs_live.
SELECT count(*) AS n FROM jobs WHERE state IN ('submitting', 'unknown', 'submitted');

-- name: count_fetching
SELECT count(*) AS n FROM jobs WHERE state = 'fetching';

-- name: lock_claims
-- Claimers of queued work take turns (transaction advisory lock), so the in-flight cap holds
-- across replicas: two of them can never both see the same room.
SELECT pg_advisory_xact_lock(727001);

-- name: claim_queued
-- Fair across tenants: each tenant with queued work (found by one index seek apiece, a loose
-- index scan of jobs_tenant_queued) offers its first $2 due jobs in its own FIFO order. A job's
-- turn is its place in its tenant's queue plus the tenant's jobs already in flight, so slots go
-- round robin, first to the tenants with the fewest in flight; $3 caps one tenant's jobs in flight.
-- Ties go to the older job. Reads at most (tenants with queued work) x $2 queued rows.
WITH RECURSIVE tenants (tenant) AS (
    (SELECT tenant FROM jobs WHERE state = 'queued' ORDER BY tenant LIMIT 1)
  UNION ALL
    SELECT (SELECT j.tenant FROM jobs j WHERE j.state = 'queued' AND j.tenant > t.tenant ORDER BY j.tenant LIMIT 1)
      FROM tenants t WHERE t.tenant IS NOT NULL
), flight AS (
    SELECT tenant, count(*) AS n FROM jobs WHERE state IN ('submitting', 'unknown', 'submitted') GROUP BY tenant
), offered AS (
    SELECT q.id, q.created_at,
           coalesce(f.n, 0) + row_number() OVER (PARTITION BY q.tenant ORDER BY q.not_before, q.created_at, q.seq) AS turn
      FROM tenants t
      CROSS JOIN LATERAL (
            SELECT j.id, j.tenant, j.not_before, j.created_at, j.seq FROM jobs j
             WHERE j.state = 'queued' AND j.tenant = t.tenant AND j.not_before <= $1
             ORDER BY j.not_before, j.created_at, j.seq LIMIT $2) q
      LEFT JOIN flight f ON f.tenant = t.tenant
     WHERE t.tenant IS NOT NULL
)
-- The chosen ids as one array (an InitPlan), so the rows are then read by primary key: joined
-- instead, the planner hashed every queued job to meet a few dozen (14 ms at 50k queued).
SELECT * FROM jobs
 WHERE id = ANY (ARRAY(SELECT o.id FROM offered o WHERE o.turn <= $3 ORDER BY o.turn, o.created_at LIMIT $2))
   AND state = 'queued'
   FOR UPDATE SKIP LOCKED;

-- name: claim_fetching
-- Fair across tenants like claim_queued (one tenant's backlog of masks must not hold back another
-- tenant's few): each tenant with masks to fetch offers its $2 longest-waiting, taken in turns.
WITH RECURSIVE tenants (tenant) AS (
    (SELECT tenant FROM jobs WHERE state = 'fetching' ORDER BY tenant LIMIT 1)
  UNION ALL
    SELECT (SELECT j.tenant FROM jobs j WHERE j.state = 'fetching' AND j.tenant > t.tenant ORDER BY j.tenant LIMIT 1)
      FROM tenants t WHERE t.tenant IS NOT NULL
), offered AS (
    SELECT q.id, q.lease_until, row_number() OVER (PARTITION BY q.tenant ORDER BY q.lease_until) AS turn
      FROM tenants t
      CROSS JOIN LATERAL (
            SELECT j.id, j.tenant, j.lease_until FROM jobs j
             WHERE j.state = 'fetching' AND j.tenant = t.tenant AND j.lease_until < $1
             ORDER BY j.lease_until LIMIT $2) q
     WHERE t.tenant IS NOT NULL
)
SELECT * FROM jobs
 WHERE id = ANY (ARRAY(SELECT o.id FROM offered o ORDER BY o.turn, o.lease_until LIMIT $2))
   AND state = 'fetching' AND lease_until < $1
   FOR UPDATE SKIP LOCKED;

-- name: claim_due
SELECT * FROM jobs WHERE state IN ('submitted', 'unknown') AND next_check_at <= $1 ORDER BY next_check_at LIMIT $2
   FOR UPDATE SKIP LOCKED;

-- name: stale_leases
-- Through jobs_live: submitting jobs are few (they count against the in-flight cap).
SELECT * FROM jobs WHERE state = 'submitting' AND lease_until < $1 ORDER BY lease_until LIMIT $2;

-- name: aged_jobs
-- The oldest $2 of each live state through jobs_live, then the oldest $2 of those (the state's
-- clause names the index's WHERE: a state from the VALUES list does not imply it).
SELECT j.* FROM (VALUES ('queued'), ('submitting'), ('unknown'), ('submitted'), ('fetching')) AS live (state)
 CROSS JOIN LATERAL (
       SELECT * FROM jobs a WHERE a.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired') AND a.state = live.state AND a.created_at < $1
        ORDER BY a.created_at LIMIT $2) j
 ORDER BY j.created_at LIMIT $2;

-- name: job_counts
SELECT state, count(*) AS n FROM jobs GROUP BY state;

-- name: gauge_jobs
-- The /metrics gauges, at every scrape: live jobs counted in jobs_live, so the cost follows live
-- work, never the number of jobs stored.
SELECT state, count(*) AS n FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired') GROUP BY state;

-- name: gauge_others
-- Deliveries waiting and dead through their partial indexes (deliveries_due, deliveries_dead,
-- migration 0008) and the oldest live job, one seek of jobs_live per live state.
SELECT (SELECT count(*) FROM deliveries WHERE state = 'pending') AS deliveries_pending,
       (SELECT count(*) FROM deliveries WHERE state = 'dead') AS deliveries_dead,
       (SELECT min((SELECT min(j.created_at) FROM jobs j WHERE j.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired') AND j.state = live.state))
          FROM (VALUES ('queued'), ('submitting'), ('unknown'), ('submitted'), ('fetching')) AS live (state))
         AS oldest_live_created_at;

-- name: flow_counts
SELECT (SELECT count(*) FROM events WHERE event = 'completed' AND source = 'webhook') AS completed_by_webhook,
       (SELECT count(*) FROM events WHERE event = 'completed' AND source = 'poll') AS completed_by_poll,
       (SELECT count(*) FROM tasks WHERE origin = 'adopted') AS tasks_adopted,
       (SELECT count(*) FROM tasks) AS tasks_created,
       (SELECT count(*) FROM tasks) - (SELECT count(DISTINCT job_id) FROM tasks) AS duplicate_tasks,
       (SELECT count(*) FROM events WHERE event = 'ambiguous') AS ambiguous_creates;

-- name: prune_usage
-- Quotas: a usage window of a tenant's counter ends when the next one begins.
DELETE FROM tenant_usage WHERE tenant = $1 AND kind = $2 AND window_start < $3;

-- name: add_usage
-- Add to a usage window only while the total stays within the limit (no row back: refused).
INSERT INTO tenant_usage (tenant, kind, window_start, amount) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant, kind, window_start) DO UPDATE SET amount = tenant_usage.amount + excluded.amount
WHERE tenant_usage.amount + excluded.amount <= $5
RETURNING amount;

-- name: open_jobs
-- Queued and fetching through the tenant's part of jobs_tenant_queued and jobs_tenant_fetching,
-- in flight among the (capped) in-flight entries of jobs_live.
SELECT (SELECT count(*) FROM jobs WHERE state = 'queued' AND tenant = $1)
     + (SELECT count(*) FROM jobs WHERE state IN ('submitting', 'unknown', 'submitted') AND tenant = $1)
     + (SELECT count(*) FROM jobs WHERE state = 'fetching' AND tenant = $1) AS n;

-- name: insert_key
INSERT INTO api_keys (key_hash, tenant, label, created_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (key_hash) DO UPDATE SET tenant = excluded.tenant, label = excluded.label;

-- name: select_key
SELECT tenant FROM api_keys WHERE key_hash = $1;

-- name: insert_outbox
INSERT INTO outbox (id, tenant, type, batch_id, job_id, payload, created_at, trace_context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING;

-- name: fan_out
-- One statement fans an event out to every destination: the batch's callback_url and each enabled
-- subscription of the tenant that wants this event type (paused ones too: they queue). $1 event, $2 now, $3 batch, $4 tenant, $5 type.
INSERT INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at, origin)
SELECT $1::text, 'batch', b.callback_url, 'tenant:' || b.tenant, false, 'pending', $2::float8, $2::float8,
       segflow_origin(b.callback_url)
  FROM batches b WHERE b.id = $3 AND b.callback_url IS NOT NULL
UNION ALL
SELECT $1::text, s.id, s.url, s.id, s.ed25519, 'pending', $2::float8, $2::float8, segflow_origin(s.url)
  FROM subscriptions s
 WHERE s.tenant = $4 AND s.disabled_at IS NULL
   AND (s.event_types = '[]' OR s.event_types::jsonb ? $5::text)
ON CONFLICT DO NOTHING;

-- name: live_in_batch
SELECT count(*) AS n FROM jobs WHERE batch_id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');

-- name: lock_deliveries
-- A window function cannot be combined with FOR UPDATE, so claimers take turns on an advisory lock.
SELECT pg_advisory_xact_lock(727002);

-- name: claim_deliveries
-- Due deliveries, at most $5 in flight per origin (scheme, host, port; counting leases held
-- anywhere), so one slow or dead endpoint never takes every slot however its URLs are spelled; none
-- to an origin that asked to be left alone, none of a paused subscription.
-- $1 owner, $2 lease until, $3 now, $4 limit.
UPDATE deliveries SET lease_owner = $1, lease_until = $2
 WHERE id IN (
   SELECT id FROM (
     SELECT d.id, d.origin, d.next_at, ROW_NUMBER() OVER (PARTITION BY d.origin ORDER BY d.next_at) AS rn
       FROM deliveries d
      WHERE d.state = 'pending' AND d.next_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3)
        AND NOT EXISTS (SELECT 1 FROM endpoint_backoff e WHERE e.origin = d.origin AND e.not_before > $3)
        AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.target AND s.paused)
   ) c
   WHERE c.rn + (SELECT count(*) FROM deliveries b
                  WHERE b.origin = c.origin AND b.state = 'pending' AND b.lease_until >= $3) <= $5
   ORDER BY c.next_at LIMIT $4)
RETURNING *;

-- name: select_outbox
SELECT * FROM outbox WHERE id = $1;

-- name: insert_attempt
INSERT INTO delivery_attempts (delivery_id, n, at, status, duration_ms, error) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (delivery_id, n) DO UPDATE
SET at = excluded.at, status = excluded.status, duration_ms = excluded.duration_ms, error = excluded.error;

-- name: finish_delivery
UPDATE deliveries SET attempts = $1, state = $2, next_at = $3, last_status = $4, last_error = $5,
       lease_owner = NULL, lease_until = NULL, finished_at = $6
 WHERE id = $7;

-- name: disable_subscription
UPDATE subscriptions SET disabled_at = $1, disabled_reason = $2 WHERE id = $3 AND disabled_at IS NULL;

-- name: kill_pending_of_subscription
UPDATE deliveries SET state = 'dead', last_error = 'subscription disabled', finished_at = $1,
       lease_owner = NULL, lease_until = NULL
 WHERE target = $2 AND state = 'pending';

-- name: replay_event
-- Replays re-queue what did not get through (dead, or pending after a failed attempt) unless $3
-- (everything): a replay must not multiply deliveries that already succeeded.
UPDATE deliveries SET state = 'pending', next_at = $1, finished_at = NULL, lease_owner = NULL, lease_until = NULL
 WHERE event_id = $2 AND ($3::boolean OR state = 'dead' OR (state = 'pending' AND attempts > 0))
   AND (target = 'batch' OR target IN (SELECT id FROM subscriptions WHERE disabled_at IS NULL));

-- name: replay_subscription
-- As replay_event, for one subscription's deliveries since $4.
UPDATE deliveries SET state = 'pending', next_at = $1, finished_at = NULL, lease_owner = NULL, lease_until = NULL
 WHERE target = $2 AND ($3::boolean OR state = 'dead' OR (state = 'pending' AND attempts > 0))
   AND created_at >= $4;

-- name: insert_subscription
INSERT INTO subscriptions (id, tenant, url, event_types, ed25519, created_at, disabled_at, disabled_reason,
                           paused, secret_version, previous_secret_until, failing_since)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: tenant_subscriptions
SELECT * FROM subscriptions WHERE tenant = $1 ORDER BY created_at;

-- name: select_subscription
SELECT * FROM subscriptions WHERE id = $1;

-- name: owned_subscription
SELECT 1 AS found FROM subscriptions WHERE id = $1 AND tenant = $2;

-- name: tenant_events
-- Newest first; ties on created_at ordered by id, so a cursor ($4, $5) neither skips nor repeats.
-- $1 tenant, $2 since, $3 limit, $4 before created_at, $5 before id, $6 type (NULL: every type).
SELECT * FROM outbox WHERE tenant = $1 AND created_at >= $2 AND ($6::text IS NULL OR type = $6)
   AND ($4::float8 IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5::text))
 ORDER BY created_at DESC, id DESC LIMIT $3;

-- name: event_deliveries
SELECT * FROM deliveries WHERE event_id = $1 ORDER BY id;

-- name: delivery_attempts
SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY n;

-- name: dead_deliveries
SELECT d.* FROM deliveries d JOIN outbox o ON o.id = d.event_id
 WHERE o.tenant = $1 AND d.state = 'dead' ORDER BY d.created_at DESC LIMIT $2;

-- retention (the pruner; migration 0009) ------------------------------------------------------
-- Each batch is one small write of the group commit, skipping rows another transaction holds.

-- name: pruned_job
SELECT id, tenant, batch_id, pruned_at FROM pruned_jobs WHERE id = $1;

-- name: pruned_batch
SELECT id, tenant, '' AS batch_id, pruned_at FROM pruned_batches WHERE id = $1;

-- name: pruned_masks_of_job
SELECT idx, pruned_at FROM pruned_masks WHERE job_id = $1;

-- name: masks_watermark
-- The pruner resumes after the newest mask it pruned instead of skipping every one before it.
SELECT coalesce(max(artifact_created_at), 0) AS mark FROM pruned_masks;

-- name: expired_masks
SELECT a.job_id, a.idx, a.path, a.created_at FROM artifacts a
 WHERE a.created_at >= $1 AND a.created_at < $2
   AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx)
 ORDER BY a.created_at LIMIT $3;

-- name: insert_pruned_mask
INSERT INTO pruned_masks (job_id, idx, artifact_created_at, pruned_at) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING;

-- name: expired_jobs
SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired') AND finished_at < $1
 ORDER BY finished_at LIMIT $2;

-- name: unpruned_masks_of_jobs
SELECT a.path FROM artifacts a WHERE a.job_id = ANY($1::text[])
   AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx);

-- name: still_expired_jobs
-- Re-checked inside the deleting transaction: a job retried since it was listed stays.
SELECT id FROM jobs WHERE id = ANY($1::text[])
   AND state IN ('succeeded', 'failed', 'cancelled', 'expired') AND finished_at < $2
 FOR UPDATE SKIP LOCKED;

-- name: delete_job_events
DELETE FROM events WHERE job_id = ANY($1::text[]);

-- name: delete_job_tasks
DELETE FROM tasks WHERE job_id = ANY($1::text[]);

-- name: delete_job_artifacts
DELETE FROM artifacts WHERE job_id = ANY($1::text[]);

-- name: delete_job_pruned_masks
DELETE FROM pruned_masks WHERE job_id = ANY($1::text[]);

-- name: tombstone_jobs
INSERT INTO pruned_jobs (id, tenant, batch_id, pruned_at)
SELECT id, tenant, batch_id, $2::float8 FROM jobs WHERE id = ANY($1::text[])
ON CONFLICT DO NOTHING;

-- name: delete_jobs_by_id
DELETE FROM jobs WHERE id = ANY($1::text[]);

-- name: empty_batches
SELECT b.id FROM batches b WHERE b.created_at < $1
   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)
 ORDER BY b.created_at LIMIT $2 FOR UPDATE SKIP LOCKED;

-- name: tombstone_batches
INSERT INTO pruned_batches (id, tenant, pruned_at)
SELECT id, tenant, $2::float8 FROM batches WHERE id = ANY($1::text[])
ON CONFLICT DO NOTHING;

-- name: delete_batches_by_id
DELETE FROM batches WHERE id = ANY($1::text[])
   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = batches.id);

-- name: expired_outbox
SELECT o.id FROM outbox o WHERE o.created_at < $1
   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.state = 'pending')
 ORDER BY o.created_at LIMIT $2 FOR UPDATE SKIP LOCKED;

-- name: finished_deliveries_of
SELECT id FROM deliveries WHERE event_id = ANY($1::text[]) AND state <> 'pending' ORDER BY id FOR UPDATE;

-- name: delete_delivery_attempts
DELETE FROM delivery_attempts WHERE delivery_id = ANY($1::bigint[]);

-- name: delete_deliveries_by_id
DELETE FROM deliveries WHERE id = ANY($1::bigint[]);

-- name: delete_outbox_events
DELETE FROM outbox WHERE id = ANY($1::text[])
   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id);

-- name: live_input_images
SELECT DISTINCT image FROM jobs
 WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired') AND image LIKE '%/inputs/%';

-- name: count_expired_masks
SELECT count(*) AS n, coalesce(sum(a.bytes), 0) AS bytes FROM artifacts a
 WHERE a.created_at >= $1 AND a.created_at < $2
   AND NOT EXISTS (SELECT 1 FROM pruned_masks p WHERE p.job_id = a.job_id AND p.idx = a.idx);

-- name: count_expired_jobs
SELECT count(*) AS n FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired') AND finished_at < $1;

-- name: count_expired_events
SELECT count(*) AS n FROM events WHERE job_id IN
  (SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired') AND finished_at < $1);

-- name: count_expired_outbox
SELECT count(*) AS n FROM outbox o WHERE o.created_at < $1
   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id AND d.state = 'pending');
-- name: lock_tenant_subscriptions
-- Creates of one tenant take turns, so two at once cannot both pass the count.
SELECT pg_advisory_xact_lock(727003, hashtext($1));

-- name: count_subscriptions
SELECT count(*) AS n FROM subscriptions WHERE tenant = $1 AND disabled_at IS NULL;

-- name: move_pending_deliveries
-- A subscription's new URL also gets its pending deliveries.
UPDATE deliveries SET url = $1, origin = segflow_origin($1) WHERE target = $2 AND state = 'pending';

-- name: update_subscription
-- A PATCH: each of URL $1, event types $2 and paused $3 changes unless NULL.
UPDATE subscriptions SET url = coalesce($1, url), event_types = coalesce($2, event_types),
       paused = coalesce($3, paused)
 WHERE id = $4
RETURNING *;

-- name: rotate_subscription_secret
UPDATE subscriptions SET secret_version = secret_version + 1, previous_secret_until = $1
 WHERE id = $2 AND disabled_at IS NULL;

-- name: insert_test_delivery
-- A test event to one subscription. $1 event, $2 subscription, $3 url, $4 ed25519, $5 now.
INSERT INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at, origin)
VALUES ($1, $2, $3, $2, $4, 'pending', $5, $5, segflow_origin($3));

-- name: select_signing
SELECT secret_version, previous_secret_until FROM subscriptions WHERE id = $1;

-- name: slow_down_endpoint
-- The endpoint asked for a pause: at least $3, doubling while it keeps asking, up to $4.
-- $1 origin, $2 now.
INSERT INTO endpoint_backoff (origin, not_before, penalty_s) VALUES ($1, $2::float8 + $3::float8, $3::float8)
ON CONFLICT (origin) DO UPDATE
   SET penalty_s = least($4::float8, greatest($3::float8, endpoint_backoff.penalty_s * 2)),
       not_before = $2::float8 + least($4::float8, greatest($3::float8, endpoint_backoff.penalty_s * 2));

-- name: forget_slow_down
DELETE FROM endpoint_backoff WHERE origin = $1;

-- name: subscription_healthy
UPDATE subscriptions SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL;

-- name: subscription_failing
-- Since when it has been failing (the first failure since its last delivery).
UPDATE subscriptions SET failing_since = coalesce(failing_since, $1) WHERE id = $2 AND disabled_at IS NULL
RETURNING *;
-- name: known_task_ids
-- Which of these upstream task ids segflow has recorded (a history row it need not look at).
SELECT task_id FROM tasks WHERE task_id = ANY($1::text[]);

-- name: recent_run_times
-- The upstream's run times of the latest final tasks (index tasks_run_recent).
SELECT run_s AS s FROM tasks WHERE run_s IS NOT NULL ORDER BY updated_at DESC LIMIT $1;

-- name: recent_heard_after
-- Create-to-final-webhook delays of the latest tasks (index tasks_heard_recent).
SELECT heard_after_s AS s FROM tasks WHERE heard_after_s IS NOT NULL ORDER BY updated_at DESC LIMIT $1;
-- Spend (issue 19) ------------------------------------------------------------------------------

-- name: add_spend
INSERT INTO spend (scope, key, usd) VALUES ($1, $2, $3)
ON CONFLICT (scope, key) DO UPDATE SET usd = spend.usd + excluded.usd;

-- name: select_spend
-- $1 the batch, $2 the tenant's day key, $3 its month key.
SELECT scope, usd FROM spend
 WHERE (scope = 'batch' AND key = $1) OR (scope = 'day' AND key = $2) OR (scope = 'month' AND key = $3);

-- name: reserve_job
-- What a reservation is decided on, in one read: the claimed job ($1, locked), its batch's cap and
-- on_budget, its tenant's own caps, and the spend totals of its batch, of the tenant's day ($2)
-- and month ($3) keys (NULL: nothing spent there yet). No row: the job, or its batch, is gone.
-- Read after lock_claims: every earlier reservation's totals are committed and seen here.
SELECT j.*, b.max_spend_usd AS batch_max_usd, b.on_budget AS batch_on_budget,
       t.daily_usd AS tenant_daily_usd, t.monthly_usd AS tenant_monthly_usd,
       (SELECT usd FROM spend WHERE scope = 'batch' AND key = j.batch_id) AS spent_batch,
       (SELECT usd FROM spend WHERE scope = 'day' AND key = $2) AS spent_day,
       (SELECT usd FROM spend WHERE scope = 'month' AND key = $3) AS spent_month
  FROM jobs j JOIN batches b ON b.id = j.batch_id
  LEFT JOIN tenant_budgets t ON t.tenant = j.tenant
 WHERE j.id = $1
   FOR UPDATE OF j;

-- name: hold_batch
-- A batch at its cap: its queued jobs wait ($1 until), with the reason shown as their error.
UPDATE jobs SET not_before = $1, error_code = 'budget_wait', error_message = $2
 WHERE batch_id = $3 AND state = 'queued' AND not_before < $1;

-- name: hold_tenant
-- A tenant at its daily or monthly cap: the queued jobs of its waiting batches wait (jobs_tenant_queued).
UPDATE jobs SET not_before = $1, error_code = 'budget_wait', error_message = $2
 WHERE tenant = $3 AND state = 'queued' AND not_before < $1
   AND batch_id IN (SELECT id FROM batches WHERE tenant = $3 AND on_budget = 'wait');

-- name: select_tenant_budget
SELECT * FROM tenant_budgets WHERE tenant = $1;

-- name: upsert_tenant_budget
INSERT INTO tenant_budgets (tenant, daily_usd, monthly_usd, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant) DO UPDATE SET daily_usd = excluded.daily_usd, monthly_usd = excluded.monthly_usd,
                                   updated_at = excluded.updated_at;

-- name: select_account_state
SELECT * FROM account_state WHERE id = 1;

-- name: upsert_account_state
INSERT INTO account_state (id, paused, reason, balance_usd, checked_at) VALUES (1, $1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET paused = excluded.paused, reason = excluded.reason,
                               balance_usd = excluded.balance_usd, checked_at = excluded.checked_at;

