-- Outdoor temperature per site and day, degree-day bases, and savings (M&V) projects.
-- Degree days are computed on read from the daily means at the site's bases, so changing
-- a base needs no re-import and no rollup pass.

-- Defaults: 15.5 °C for heating is the UK/CIBSE convention; 22 °C for cooling is the
-- common pairing with it. Both are per site, because a cold store and an office differ.
ALTER TABLE sites ADD COLUMN IF NOT EXISTS hdd_base_c double precision NOT NULL DEFAULT 15.5
    CHECK (hdd_base_c BETWEEN -20 AND 40);
ALTER TABLE sites ADD COLUMN IF NOT EXISTS cdd_base_c double precision NOT NULL DEFAULT 22
    CHECK (cdd_base_c BETWEEN -20 AND 40);

CREATE TABLE IF NOT EXISTS site_temperatures (
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    day         date NOT NULL,  -- the site's local calendar day
    mean_c      double precision NOT NULL CHECK (mean_c BETWEEN -90 AND 60),
    source      text NOT NULL CHECK (source IN ('upload', 'api', 'simulator')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, day)
);

CREATE TABLE IF NOT EXISTS savings_projects (
    id              bigserial PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(btrim(name)) > 0),
    starts_on       date NOT NULL,  -- first local day of the reporting period
    baseline_days   integer NOT NULL DEFAULT 365 CHECK (baseline_days BETWEEN 14 AND 1096),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name)
);

-- Export jobs deliver a site's degree days beside its measurements.
ALTER TABLE export_runs DROP CONSTRAINT IF EXISTS export_runs_kind_check;
ALTER TABLE export_runs ADD CONSTRAINT export_runs_kind_check
    CHECK (kind IN ('measurements', 'catalog', 'virtual_meters', 'degree_days'));
