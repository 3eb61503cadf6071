-- Devices that push notifications go to. A token belongs to one user of a tenant at a
-- time: registering it again for another user moves it.
CREATE TABLE devices (
    tenant_id  TEXT NOT NULL,
    token      TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    platform   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, token)
);

CREATE INDEX devices_by_user ON devices (tenant_id, user_id);
