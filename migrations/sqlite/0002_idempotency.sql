-- Idempotency keys: the first request with a key claims it (the primary key decides among
-- concurrent ones, across instances); its answer is kept so that a repeat gets the same.
CREATE TABLE idempotency_keys (
    tenant_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    -- SHA-256 of the route and body: the same key with another body is refused.
    fingerprint BLOB NOT NULL,
    -- NULL while the first request is still being answered.
    status      INTEGER,
    response    TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
