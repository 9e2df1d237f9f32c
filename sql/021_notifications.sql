-- Notification preferences per person, and one-click unsubscribe for every message.

CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id         bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- alert mail: each episode as it opens and clears, one digest a day, or none
    alert_email     text NOT NULL DEFAULT 'immediate' CHECK (alert_email IN ('immediate', 'digest', 'off')),
    digest_hour     smallint NOT NULL DEFAULT 7 CHECK (digest_hour BETWEEN 0 AND 23),
    -- immediate alert mail waits out these local hours (an end before the start spans midnight)
    quiet_start     time,
    quiet_end       time,
    timezone        text NOT NULL DEFAULT 'UTC',
    report_email    boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND (quiet_start IS NULL OR quiet_start <> quiet_end))
);

-- What an address has unsubscribed from, by category, keyed by a SHA-256 of the lower-cased
-- address (so it holds for a plain address with no account, and names nobody in the clear).
CREATE TABLE IF NOT EXISTS mail_suppressions (
    address_digest  text NOT NULL,
    category        text NOT NULL CHECK (category IN ('alerts', 'reports', 'invites', 'account')),
    at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (address_digest, category)
);

ALTER TABLE mail_outbox ADD COLUMN IF NOT EXISTS category text NOT NULL DEFAULT 'account'
    CHECK (category IN ('alerts', 'reports', 'invites', 'account', 'security'));
