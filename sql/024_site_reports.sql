-- Monthly site reports: made on the 1st in the site's time zone for the month before,
-- archived here (the page as HTML and as PDF), mailed to the people who want report mail.
CREATE TABLE IF NOT EXISTS site_reports (
    id            bigserial PRIMARY KEY,
    site_id       bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    month_start   timestamptz NOT NULL,
    month_end     timestamptz NOT NULL,
    html          text NOT NULL,
    pdf           bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- a report made again (after a tariff correction, say) replaces it; the old one is kept, marked
    superseded_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS site_reports_current ON site_reports (site_id, month_start)
    WHERE superseded_at IS NULL;

-- A file sent with a message (a report's PDF); kept with the message, pruned with it.
ALTER TABLE mail_outbox ADD COLUMN IF NOT EXISTS attachment_name text;
ALTER TABLE mail_outbox ADD COLUMN IF NOT EXISTS attachment_type text;
ALTER TABLE mail_outbox ADD COLUMN IF NOT EXISTS attachment bytea;
