-- Chat messages, stored once per tenant and messageId, with their place in the
-- conversation.
CREATE TABLE chat_messages (
    tenant_id       TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);

-- Each conversation's last sequence number; its row is locked while a message is added,
-- so that a conversation's messages are numbered, and fanned out, one at a time.
CREATE TABLE conversations (
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    last_sequence   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);

-- Every real-time event for a user, in order: what a reconnecting client replays from
-- its cursor (the id). Kept for realtime.replay_for.
CREATE TABLE realtime_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX realtime_events_by_user ON realtime_events (tenant_id, user_id, id);
CREATE INDEX realtime_events_by_age ON realtime_events (created_at);

-- The last cursor each user acknowledged.
CREATE TABLE realtime_acks (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    cursor    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- Read receipts.
CREATE TABLE chat_reads (
    tenant_id  TEXT NOT NULL,
    message_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    read_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, message_id, user_id)
);

-- In-app notifications, per recipient.
CREATE TABLE inbox_items (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    read_at    TEXT,
    PRIMARY KEY (tenant_id, user_id, id)
);

-- Who is connected where: a row per user and instance while it holds connections.
CREATE TABLE presence (
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    connections BIGINT NOT NULL,
    last_seen   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, instance_id)
);

-- The key that signs real-time tokens, shared by every instance on this database.
CREATE TABLE realtime_keys (
    id  INTEGER PRIMARY KEY,
    key BLOB NOT NULL
);
