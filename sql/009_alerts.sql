-- Alerts: rules configured per site or node, episodes (one per occurrence of a problem,
-- not one per evaluation), the evaluator's cursor, and webhooks with a delivery outbox.

CREATE TABLE IF NOT EXISTS alert_rules (
    id          bigserial PRIMARY KEY,
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    node_id     bigint REFERENCES nodes (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('threshold', 'after_hours', 'sensor_offline', 'bridge_offline',
                                              'anomaly', 'cycling', 'base_load', 'budget')),
    name        text NOT NULL CHECK (length(btrim(name)) > 0),
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled     boolean NOT NULL DEFAULT true,
    -- Data time up to which the rule has been evaluated: the scheduler resumes here after
    -- a restart, and moves it in the same transaction as the episodes it opens or clears.
    evaluated_to timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_rules_site ON alert_rules (site_id);

-- One row per episode. `subject` says what within the rule's scope the episode is about
-- (a sensor serial, a bridge serial, a node id, a month), so that one offline rule can
-- hold an episode per sensor.
CREATE TABLE IF NOT EXISTS alert_episodes (
    id              bigserial PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    subject         text NOT NULL,
    severity        text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    message         text NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at      timestamptz NOT NULL,     -- data time the condition began
    cleared_at      timestamptz,              -- data time it ended (NULL: still going)
    acknowledged_at timestamptz,
    acknowledged_by bigint REFERENCES users (id) ON DELETE SET NULL,
    resolved_at     timestamptz,
    resolved_by     bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (cleared_at IS NULL OR cleared_at >= started_at),
    UNIQUE (rule_id, subject, started_at)
);
-- At most one ongoing episode per rule and subject: raised once per episode.
CREATE UNIQUE INDEX IF NOT EXISTS alert_episodes_ongoing ON alert_episodes (rule_id, subject)
    WHERE cleared_at IS NULL;
CREATE INDEX IF NOT EXISTS alert_episodes_open ON alert_episodes (rule_id) WHERE resolved_at IS NULL;

CREATE TABLE IF NOT EXISTS webhooks (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    url         text NOT NULL CHECK (url ~ '^https?://'),
    -- The HMAC key. Unlike a password it must be readable to sign with; it is shown to
    -- the customer once and never returned by the API again.
    secret      text NOT NULL CHECK (length(secret) >= 16),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The outbox: written in the transaction that opens or clears an episode, so that no
-- event is lost between the database and the network, and retried with back-off.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    episode_id      bigint NOT NULL REFERENCES alert_episodes (id) ON DELETE CASCADE,
    event           text NOT NULL CHECK (event IN ('raised', 'cleared')),
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,              -- gave up after the last attempt
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, episode_id, event)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
