-- Conversations defined through the API (PUT /v1/conversations/{id}) have a type; a
-- conversation only numbered by chat messages sent with their recipientIds has none, and
-- is unknown to the API.
ALTER TABLE conversations ADD COLUMN conversation_type TEXT;

-- Its members. The primary key orders them by user id within their conversation, so
-- that fan-out and GET read them a page at a time by keyset
-- (user_id > $after ORDER BY user_id LIMIT n), never all at once.
CREATE TABLE conversation_members (
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, user_id)
);

-- How far each member has read a conversation: every message numbered up to
-- read_sequence.
CREATE TABLE conversation_reads (
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    read_sequence   BIGINT NOT NULL,
    read_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, user_id)
);

-- Marking a conversation read finds the messages between two sequence numbers.
CREATE INDEX chat_messages_by_conversation ON chat_messages (tenant_id, conversation_id, sequence);
