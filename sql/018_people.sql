-- People and access without curl: invites and password resets by single-use emailed
-- links, two-factor sign-in (TOTP) with recovery codes, organisation policies (allowed
-- email domains, two-factor required), and sessions a person can see and revoke.

-- An organisation is a reseller or a customer: both carry the same two policies.
ALTER TABLE customers ADD COLUMN IF NOT EXISTS allowed_email_domains text[] NOT NULL DEFAULT '{}';
ALTER TABLE customers ADD COLUMN IF NOT EXISTS require_totp boolean NOT NULL DEFAULT false;
ALTER TABLE resellers ADD COLUMN IF NOT EXISTS allowed_email_domains text[] NOT NULL DEFAULT '{}';
ALTER TABLE resellers ADD COLUMN IF NOT EXISTS require_totp boolean NOT NULL DEFAULT false;

-- invited_at: the account waits for its person to accept (no password yet).
-- totp_secret: base32, set at enrolment; totp_enabled_at: confirmed with a first code.
-- totp_last_step: the last 30-s step accepted, so a code is never accepted twice.
ALTER TABLE users ADD COLUMN IF NOT EXISTS invited_at timestamptz;
ALTER TABLE users ADD COLUMN IF NOT EXISTS invited_by bigint REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE users ADD COLUMN IF NOT EXISTS password_changed_at timestamptz;
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_sign_in_at timestamptz;
ALTER TABLE users ADD COLUMN IF NOT EXISTS totp_secret text;
ALTER TABLE users ADD COLUMN IF NOT EXISTS totp_enabled_at timestamptz;
ALTER TABLE users ADD COLUMN IF NOT EXISTS totp_last_step bigint;

-- A link sent by mail: only its SHA-256 is kept, so the table cannot be used to sign in.
CREATE TABLE IF NOT EXISTS account_tokens (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('invite', 'reset')),
    token_hash  text NOT NULL UNIQUE,
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX IF NOT EXISTS account_tokens_user ON account_tokens (user_id, kind);

-- Ten one-time codes for when the phone is lost; hashed like passwords.
CREATE TABLE IF NOT EXISTS totp_recovery_codes (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   text NOT NULL,
    used_at     timestamptz
);
CREATE INDEX IF NOT EXISTS totp_recovery_codes_user ON totp_recovery_codes (user_id);

-- The dashboard's sign-ins are login sessions too (api_keys.session), so that a person
-- can list and revoke them; where they came from helps recognise one.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS client text;
