-- Attempts made before the message was last replayed from its dead-letter queue: a replay
-- starts the attempts afresh, and the ledger still counts every one.
ALTER TABLE broker_messages ADD COLUMN earlier_attempts INTEGER NOT NULL DEFAULT 0;
