-- Alert mail: each episode that opens or clears is an event, written in the transaction that
-- opens or clears it (so none is lost or doubled); the alert service turns events into mail
-- to the rule's recipients, as each person's preferences say.
CREATE TABLE IF NOT EXISTS alert_mail_events (
    id            bigserial PRIMARY KEY,
    episode_id    bigint NOT NULL REFERENCES alert_episodes (id) ON DELETE CASCADE,
    event         text NOT NULL CHECK (event IN ('raised', 'cleared')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    -- why composing its mail failed (it is then not retried: the episode is in the app)
    last_error    text,
    UNIQUE (episode_id, event)
);
CREATE INDEX IF NOT EXISTS alert_mail_events_pending ON alert_mail_events (id) WHERE processed_at IS NULL;

-- Alert mail held back for one message later: a person's daily digest, or the summary of a
-- storm (the 51st alert mail to one address within an hour and the rest of that hour).
CREATE TABLE IF NOT EXISTS alert_mail_held (
    id          bigserial PRIMARY KEY,
    address     text NOT NULL,
    user_id     bigint REFERENCES users (id) ON DELETE CASCADE,
    episode_id  bigint NOT NULL REFERENCES alert_episodes (id) ON DELETE CASCADE,
    event       text NOT NULL CHECK (event IN ('raised', 'cleared')),
    reason      text NOT NULL CHECK (reason IN ('digest', 'storm')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX IF NOT EXISTS alert_mail_held_pending ON alert_mail_held (address, reason) WHERE sent_at IS NULL;
