-- The embedded broker's queues: every message of every queue, dead-letter queues included.
-- A message is in its queue until a worker acknowledges it (deleted) or it is dead-lettered
-- (moved to the queue '<queue>.dlq'). Leases are kept in memory, not here: a lease lost in
-- a crash only means the message is delivered again, which is what a crash must cause.
CREATE TABLE broker_messages (
    -- AUTOINCREMENT so that an id is never reused: ids order a queue and fence settlements.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    routing_key  TEXT    NOT NULL,
    message_id   TEXT,
    body         BLOB    NOT NULL,
    published_ms INTEGER NOT NULL,
    -- When the message expires to the dead-letter queue; NULL in dead-letter queues.
    expires_ms   INTEGER,
    -- A retried message waits until then.
    available_ms INTEGER NOT NULL,
    -- Failed handler attempts so far.
    attempts     INTEGER NOT NULL DEFAULT 0,
    dead_reason  TEXT,
    last_error   TEXT
);

-- Consumers read a queue in id order; SQLite appends the rowid to every index.
CREATE INDEX broker_messages_by_queue ON broker_messages (queue);
-- The expiry sweep looks for what has expired.
CREATE INDEX broker_messages_by_expiry ON broker_messages (expires_ms) WHERE expires_ms IS NOT NULL;
