-- Mail, a real part: a transactional outbox. A message is queued in the transaction of
-- the change it reports (a rolled-back change sends nothing), and the alert service sends
-- what is due through the configured SMTP server, retrying with back-off. Messages to a
-- person are deleted when that person is erased; sent ones are pruned by retention.
CREATE TABLE IF NOT EXISTS mail_outbox (
    id               bigserial PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    kind             text NOT NULL,
    user_id          bigint REFERENCES users(id) ON DELETE CASCADE,
    to_address       text NOT NULL CHECK (to_address LIKE '%_@_%'),
    subject          text NOT NULL,
    body_text        text NOT NULL,
    body_html        text,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    given_up_at      timestamptz,
    last_error       text
);
CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND given_up_at IS NULL;
CREATE INDEX IF NOT EXISTS mail_outbox_user ON mail_outbox (user_id);
