-- The delivery ledger: every accepted event and the state of each of its deliveries.
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX notifications_by_tenant ON notifications (tenant_id, created_at);
CREATE INDEX notifications_by_age ON notifications (created_at);

CREATE TABLE deliveries (
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    target          TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_error      TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (notification_id, channel, recipient, target)
);
