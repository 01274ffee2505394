-- Tracing: a job keeps the W3C traceparent of its `segflow.job` span (set when its batch is accepted,
-- NULL when tracing is off), so every replica's spans for the job join one trace; an outbox event
-- keeps its job's, so callback deliveries (and the receiver, through `traceparent`) join it too.
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
ALTER TABLE outbox ADD COLUMN trace_context TEXT;
-- The dead-deliveries gauge counts through this index at every scrape, not through the table.
CREATE INDEX deliveries_dead ON deliveries (created_at) WHERE state = 'dead';
