-- Support records: personal (who asked, what they wrote), kept for a limited time after
-- closing, and anonymised when the person is erased.
CREATE TABLE IF NOT EXISTS support_requests (
    id          bigserial PRIMARY KEY,
    customer_id bigint REFERENCES customers (id) ON DELETE CASCADE,
    user_id     bigint REFERENCES users (id) ON DELETE SET NULL,
    subject     text NOT NULL CHECK (length(btrim(subject)) > 0),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX IF NOT EXISTS support_requests_user ON support_requests (user_id);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_user_id, at);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
