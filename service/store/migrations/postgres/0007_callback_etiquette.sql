-- Callback etiquette (issue 18) and amplification limits (issue 13): see the SQLite migration.

-- The origin (scheme://host:port) of a callback URL: the same expression as
-- service/callback_origin.py's origin_of (one regular expression, the same in both).
CREATE OR REPLACE FUNCTION segflow_origin(url text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN m IS NULL THEN url ELSE
         lower(m[1]) || '://' || lower(m[2]) || ':' ||
         coalesce(nullif(m[3], ''), CASE lower(m[1]) WHEN 'https' THEN '443' ELSE '80' END) END
    FROM (SELECT regexp_match(url, '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^@/?#]*@)?(\[[^]/?#]*\]|[^:/?#\[@][^:/?#@]*|)(?::([0-9]*))?')) AS r(m)
$$;

ALTER TABLE subscriptions ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE subscriptions ADD COLUMN secret_version integer NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN previous_secret_until double precision;
ALTER TABLE subscriptions ADD COLUMN failing_since double precision;

ALTER TABLE deliveries ADD COLUMN origin text;
UPDATE deliveries SET origin = segflow_origin(url);
CREATE INDEX deliveries_origin_busy ON deliveries (origin, lease_until) WHERE state = 'pending';

CREATE TABLE endpoint_backoff (
    origin      text PRIMARY KEY,
    not_before  double precision NOT NULL,
    penalty_s   double precision NOT NULL
);

CREATE INDEX outbox_tenant_newest ON outbox (tenant, created_at, id);
CREATE INDEX outbox_tenant_type ON outbox (tenant, type, created_at, id);
