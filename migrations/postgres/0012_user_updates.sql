-- Per-user updates (seed 004) are appended to the user's log once per update id and event
-- name, so that a redelivered update appends nothing: the id is the update's `_id`. Other
-- events leave it null and outside the index, which costs their inserts nothing.
ALTER TABLE realtime_events ADD COLUMN update_id TEXT;

CREATE UNIQUE INDEX realtime_events_once_per_update
    ON realtime_events (tenant_id, user_id, kind, update_id) WHERE update_id IS NOT NULL;
