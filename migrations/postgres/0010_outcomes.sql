-- Why a notification ended as it did, when it did not reach its recipients ("unknown
-- tenant", the last error of a failed event).
ALTER TABLE notifications ADD COLUMN reason TEXT;

-- An idempotency key is bound to its events' ids (a JSON array) and acceptance time
-- before they are published, so that a repeat of a send whose publish was not confirmed
-- republishes the same envelopes instead of new ones. status 503 marks such a send;
-- claimed_at tells a claim whose process died from one still publishing.
ALTER TABLE idempotency_keys ADD COLUMN event_ids TEXT;
ALTER TABLE idempotency_keys ADD COLUMN accepted_at TIMESTAMPTZ;
ALTER TABLE idempotency_keys ADD COLUMN claimed_at TIMESTAMPTZ;
