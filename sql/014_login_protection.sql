-- Authentication that holds: failed logins are throttled per account with growing delays
-- and lock the account after repeated failures; login sessions are marked, expire, and
-- are pruned by the retention job.

-- Keyed by a SHA-256 of the lower-cased email, for addresses with or without an account,
-- so that throttling answers the same whether or not an account exists (no oracle).
CREATE TABLE IF NOT EXISTS login_throttle (
    email_digest    text PRIMARY KEY,
    failures        integer NOT NULL DEFAULT 0,
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz
);

ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS session boolean NOT NULL DEFAULT false;
UPDATE api_keys SET session = true WHERE name = 'login session' AND NOT session;
CREATE INDEX IF NOT EXISTS api_keys_sessions_expiry ON api_keys (expires_at) WHERE session;
