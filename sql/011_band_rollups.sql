-- The cost tier: energy and cost per node, local day and tariff band, so that a month of
-- per-node cost reads ~30 rows per node and band instead of 720 hourly rows per node.
-- It is derived data, kept by the rollup worker in the same transaction as the hourly
-- tier it is computed from. `band` is '' for hours before the site's first tariff.
CREATE TABLE IF NOT EXISTS rollups_band_1d (
    node_id         bigint NOT NULL,
    bucket          timestamptz NOT NULL,          -- local midnight, as in rollups_1d
    band            text NOT NULL,
    energy_wh       double precision NOT NULL,
    cost_minor      double precision NOT NULL,     -- unrounded; money is rounded at the edges
    unmonitored_wh  double precision,
    max_power_w     double precision,
    PRIMARY KEY (node_id, bucket, band)
);
SELECT create_hypertable('rollups_band_1d', by_range('bucket', INTERVAL '365 days'), if_not_exists => TRUE);

-- A site's day is served from the cost tier only once it is marked here; an unmarked day is
-- costed from the hourly tier (slower, always right). Rows here mean "complete and priced
-- with the tariffs as they are now".
CREATE TABLE IF NOT EXISTS band_days (
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    day         timestamptz NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, day)
);

-- A tariff or site change that can re-price days un-marks them; the worker re-prices them.
-- The rollup worker's advisory lock serialises this with a worker pass, so a pass that
-- priced with the old tariff cannot mark a day after this has un-marked it.
CREATE OR REPLACE FUNCTION wl_unmark_band_days() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    site bigint;
    since timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(1919905900);  -- analytics.worker.ROLLUP_LOCK
    IF TG_TABLE_NAME = 'tariffs' THEN
        site := CASE WHEN TG_OP = 'DELETE' THEN OLD.site_id ELSE NEW.site_id END;
        since := CASE WHEN TG_OP = 'INSERT' THEN NEW.valid_from
                      WHEN TG_OP = 'DELETE' THEN OLD.valid_from
                      ELSE least(OLD.valid_from, NEW.valid_from) END;
    ELSIF TG_TABLE_NAME = 'tariff_bands' THEN
        SELECT t.site_id, t.valid_from INTO site, since FROM tariffs t
        WHERE t.id = CASE WHEN TG_OP = 'DELETE' THEN OLD.tariff_id ELSE NEW.tariff_id END;
    ELSE  -- sites: a new zone or country moves local days and holidays
        site := NEW.id;
        since := '-infinity';
    END IF;
    IF site IS NOT NULL THEN
        DELETE FROM band_days WHERE site_id = site AND day >= since - interval '1 day';
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS tariffs_unmark_band_days ON tariffs;
CREATE TRIGGER tariffs_unmark_band_days AFTER INSERT OR UPDATE OR DELETE ON tariffs
    FOR EACH ROW EXECUTE FUNCTION wl_unmark_band_days();
DROP TRIGGER IF EXISTS tariff_bands_unmark_band_days ON tariff_bands;
CREATE TRIGGER tariff_bands_unmark_band_days AFTER INSERT OR UPDATE OR DELETE ON tariff_bands
    FOR EACH ROW EXECUTE FUNCTION wl_unmark_band_days();
DROP TRIGGER IF EXISTS sites_unmark_band_days ON sites;
CREATE TRIGGER sites_unmark_band_days AFTER UPDATE OF timezone, country ON sites
    FOR EACH ROW WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone OR OLD.country IS DISTINCT FROM NEW.country)
    EXECUTE FUNCTION wl_unmark_band_days();
