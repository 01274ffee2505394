-- Recovery (issue 16). jobs.sent_at: when the current attempt's create was about to go out, written
-- durably before the POST; a lapsed claim without it was never sent, so it is queued again at once
-- instead of waiting an adoption window. tasks.run_s (the upstream's own ended_at - created_at of a
-- final task) and tasks.heard_after_s (our create to its final webhook) are what the adaptive first
-- poll and adoption window are computed from, so every replica reads the same figures.

ALTER TABLE jobs ADD COLUMN sent_at double precision;
ALTER TABLE tasks ADD COLUMN run_s double precision;
ALTER TABLE tasks ADD COLUMN heard_after_s double precision;
CREATE INDEX tasks_run_recent ON tasks (updated_at) WHERE run_s IS NOT NULL;
CREATE INDEX tasks_heard_recent ON tasks (updated_at) WHERE heard_after_s IS NOT NULL;
