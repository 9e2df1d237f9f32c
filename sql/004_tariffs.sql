-- Effective-dated tariffs: a version applies from valid_from until the next version of
-- the same site. Money is in minor units (pence, cents) with fractions for unit rates.

CREATE TABLE IF NOT EXISTS tariffs (
    id                              bigserial PRIMARY KEY,
    site_id                         bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name                            text NOT NULL CHECK (length(btrim(name)) > 0),
    currency                        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    valid_from                      timestamptz NOT NULL,
    standing_charge_minor_per_day   numeric(14, 4) NOT NULL DEFAULT 0 CHECK (standing_charge_minor_per_day >= 0),
    demand_charge_minor_per_kw      numeric(14, 4) NOT NULL DEFAULT 0 CHECK (demand_charge_minor_per_kw >= 0),
    demand_interval_minutes         smallint NOT NULL DEFAULT 30 CHECK (demand_interval_minutes IN (15, 30)),
    vat_rate                        numeric(6, 4) NOT NULL DEFAULT 0 CHECK (vat_rate >= 0 AND vat_rate < 1),
    created_at                      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, valid_from)
);

-- Time-of-use bands. A band covers [start_time, end_time) local time on the day types it
-- names; end_time 00:00 means midnight at the end of the day. Bands of one tariff must
-- cover every minute of every day type exactly once (checked by the application).
CREATE TABLE IF NOT EXISTS tariff_bands (
    id                  bigserial PRIMARY KEY,
    tariff_id           bigint NOT NULL REFERENCES tariffs (id) ON DELETE CASCADE,
    name                text NOT NULL CHECK (length(btrim(name)) > 0),
    rate_minor_per_kwh  numeric(14, 4) NOT NULL CHECK (rate_minor_per_kwh >= 0),
    day_types           text[] NOT NULL CHECK (day_types <@ ARRAY['weekday', 'weekend', 'holiday']
                                                AND cardinality(day_types) > 0),
    start_time          time NOT NULL,
    end_time            time NOT NULL,
    CHECK (start_time < end_time OR end_time = '00:00')
);
CREATE INDEX IF NOT EXISTS tariff_bands_tariff ON tariff_bands (tariff_id);

-- History is never rewritten: a version that has taken effect is frozen.
CREATE OR REPLACE FUNCTION wl_freeze_effective_tariffs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz;
BEGIN
    IF TG_TABLE_NAME = 'tariffs' THEN
        started := OLD.valid_from;
    ELSE
        SELECT valid_from INTO started FROM tariffs WHERE id = OLD.tariff_id;
    END IF;
    IF started IS NOT NULL AND started <= now()
       AND current_setting('wattline.allow_history_rewrite', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'tariff version in effect since % is frozen; add a new version instead', started
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
DROP TRIGGER IF EXISTS tariffs_frozen ON tariffs;
CREATE TRIGGER tariffs_frozen BEFORE UPDATE OR DELETE ON tariffs
    FOR EACH ROW EXECUTE FUNCTION wl_freeze_effective_tariffs();
DROP TRIGGER IF EXISTS tariff_bands_frozen ON tariff_bands;
CREATE TRIGGER tariff_bands_frozen BEFORE UPDATE OR DELETE ON tariff_bands
    FOR EACH ROW EXECUTE FUNCTION wl_freeze_effective_tariffs();
