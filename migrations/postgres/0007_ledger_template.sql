-- Which template (name, locale, version) an email notification was rendered from, as
-- JSON, and what the provider answered each delivery (an SMTP reply, say).
ALTER TABLE notifications ADD COLUMN template TEXT;
ALTER TABLE deliveries ADD COLUMN reply TEXT;
