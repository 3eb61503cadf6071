-- Audit records: each tenant's records form a hash chain. Record n carries the hash of
-- record n-1, and its own hash covers that and its fields, so that a changed, removed or
-- inserted record breaks the chain from there on.
CREATE TABLE audit_records (
    tenant_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    changes     TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    compliance  BOOLEAN NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- Queries are newest first (by seq) within a tenant, filtered by one of these.
CREATE INDEX audit_by_event_type ON audit_records (tenant_id, event_type, seq);
CREATE INDEX audit_by_user ON audit_records (tenant_id, user_id, seq);
CREATE INDEX audit_by_entity ON audit_records (tenant_id, entity_type, entity_id, seq);
CREATE INDEX audit_by_time ON audit_records (tenant_id, occurred_at);
CREATE INDEX audit_by_age ON audit_records (recorded_at);

-- The end of each tenant's chain; locked while a batch extends it, so that writers on
-- several instances extend it one after the other.
CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      BYTEA NOT NULL
);
