-- Emission factors: a site's own annual grid factor (else its country's from the bundled
-- table, wattline/data/grid_co2e_2021.csv), and an optional hourly series that, where it
-- has an hour, takes precedence. CO2e is computed on read from the hourly rollups, so a new
-- factor needs no rollup pass.

ALTER TABLE sites ADD COLUMN IF NOT EXISTS co2e_g_per_kwh double precision
    CHECK (co2e_g_per_kwh BETWEEN 0 AND 2000);
-- Where the site's own factor comes from (a supplier's fuel-mix disclosure, say): reports quote it.
ALTER TABLE sites ADD COLUMN IF NOT EXISTS co2e_source text CHECK (length(co2e_source) <= 200);

CREATE TABLE IF NOT EXISTS site_co2e_hourly (
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    hour        timestamptz NOT NULL CHECK (extract(epoch FROM hour)::bigint % 3600 = 0),
    g_per_kwh   double precision NOT NULL CHECK (g_per_kwh BETWEEN 0 AND 2000),
    source      text NOT NULL CHECK (source IN ('upload', 'api')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, hour)
);

ALTER TABLE export_runs DROP CONSTRAINT IF EXISTS export_runs_kind_check;
ALTER TABLE export_runs ADD CONSTRAINT export_runs_kind_check
    CHECK (kind IN ('measurements', 'catalog', 'virtual_meters', 'degree_days', 'emissions'));

-- An export job may also deliver each site's CO2e per node and local day.
ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS include_emissions boolean NOT NULL DEFAULT false;
