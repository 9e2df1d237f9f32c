-- The tariff editor: drafts a facility manager can change freely (costing never reads
-- them), and corrections, the one way to re-price the past: an admin, a date, a reason.

CREATE TABLE IF NOT EXISTS tariff_drafts (
    id          bigserial PRIMARY KEY,
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    -- The whole version as the editor holds it (name, currency, valid_from, charges, bands),
    -- so that a half-finished one can be saved; it is validated in full when published.
    body        jsonb NOT NULL,
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tariff_drafts_site ON tariff_drafts (site_id);

CREATE TABLE IF NOT EXISTS tariff_corrections (
    id              bigserial PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    tariff_id       bigint REFERENCES tariffs (id) ON DELETE SET NULL,
    repriced_from   timestamptz NOT NULL,
    reason          text NOT NULL CHECK (length(btrim(reason)) >= 10),
    corrected_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    corrected_at    timestamptz NOT NULL DEFAULT now(),
    -- local days whose priced costs were dropped for the worker to price again
    days_repriced   integer NOT NULL,
    -- what was already handed out for those days (exports, reports), now superseded
    superseded      jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS tariff_corrections_site ON tariff_corrections (site_id, corrected_at DESC);

-- Costs that left Wattline for a period (a scheduled export, a monthly report): a later
-- correction of those days marks them superseded and lists them on the correction.
CREATE TABLE IF NOT EXISTS cost_deliveries (
    id              bigserial PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    reference       text NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL CHECK (period_end > period_start),
    delivered_at    timestamptz NOT NULL DEFAULT now(),
    superseded_at   timestamptz
);
CREATE INDEX IF NOT EXISTS cost_deliveries_site ON cost_deliveries (site_id, period_end);
