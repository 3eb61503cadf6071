-- Tenants' delivery provider settings (smtp, apns, fcm), as JSON, one row per provider.
CREATE TABLE providers (
    tenant_id  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    settings   TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);
