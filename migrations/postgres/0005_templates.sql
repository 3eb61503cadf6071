-- Tenants' email templates. Every PUT adds a version; the newest version of each
-- (name, locale) is the one rendered. An empty locale is the default.
CREATE TABLE templates (
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    locale      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    subject     TEXT,
    html        TEXT NOT NULL,
    text        TEXT,
    sample_data TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name, locale, version)
);

-- Bumped with every change to a tenant's templates, so that a renderer can tell with one
-- cheap read whether what it compiled is still current.
CREATE TABLE template_revisions (
    tenant_id TEXT PRIMARY KEY,
    revision  BIGINT NOT NULL
);
