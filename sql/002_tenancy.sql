-- Tenancy and accounts. Personal data (names, emails, phones, payment references)
-- lives only in these tables, never beside readings.

CREATE TABLE IF NOT EXISTS resellers (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (length(btrim(name)) > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name)
);

CREATE TABLE IF NOT EXISTS customers (
    id                  bigserial PRIMARY KEY,
    reseller_id         bigint NOT NULL REFERENCES resellers (id) ON DELETE RESTRICT,
    name                text NOT NULL CHECK (length(btrim(name)) > 0),
    billing_email       text CHECK (billing_email IS NULL OR billing_email LIKE '%_@_%'),
    -- A processor token and the last four digits: never a card number.
    payment_reference   text CHECK (payment_reference IS NULL OR payment_reference !~ '[0-9]{12,}'),
    card_last4          char(4) CHECK (card_last4 IS NULL OR card_last4 ~ '^[0-9]{4}$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (reseller_id, name)
);

CREATE TABLE IF NOT EXISTS users (
    id              bigserial PRIMARY KEY,
    -- A user is scoped to exactly one reseller or one customer.
    reseller_id     bigint REFERENCES resellers (id) ON DELETE RESTRICT,
    customer_id     bigint REFERENCES customers (id) ON DELETE RESTRICT,
    role            text NOT NULL CHECK (role IN
                        ('reseller_admin', 'customer_admin', 'facility_manager', 'installer', 'viewer')),
    email           text NOT NULL CHECK (email LIKE '%_@_%'),
    full_name       text NOT NULL DEFAULT '',
    phone           text,
    password_hash   text CHECK (password_hash IS NULL OR password_hash LIKE '$argon2id$%'),
    disabled_at     timestamptz,
    erased_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((reseller_id IS NULL) <> (customer_id IS NULL)),
    CHECK (role <> 'reseller_admin' OR reseller_id IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

CREATE TABLE IF NOT EXISTS api_keys (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The visible part ("wl_" + 8 chars); the secret part is stored only as a hash.
    prefix          text NOT NULL UNIQUE CHECK (prefix ~ '^wl_[A-Za-z0-9]{8}$'),
    secret_hash     text NOT NULL,
    name            text NOT NULL DEFAULT '',
    scopes          text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'commission', 'admin']
                                           AND cardinality(scopes) > 0),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS marketing_consents (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'phone', 'post')),
    granted     boolean NOT NULL,
    source      text NOT NULL CHECK (length(source) > 0),
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS marketing_consents_user ON marketing_consents (user_id, channel, at DESC);
