-- Generation (wattline/generation.py): a circuit or device whose current flows out to the
-- site, not in. A clamp measures magnitude only, so the direction is the node's setting.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS flow text NOT NULL DEFAULT 'consumption'
    CHECK (flow IN ('consumption', 'generation'));
DO $$
BEGIN
    ALTER TABLE nodes ADD CONSTRAINT nodes_generation_kind CHECK (flow = 'consumption' OR kind IN ('circuit', 'device'));
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- In every rollup tier: energy_wh is consumption; generation_wh what the node's subtree
-- generated, and export_wh what it gave out, summed from minutes, each max(G − C, 0)
-- (NULL where the subtree has no generation, or no consumption measured with it). Net
-- import is energy_wh − generation_wh + export_wh; self-consumption generation_wh − export_wh.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rollups_1m', 'rollups_15m', 'rollups_1h', 'rollups_1d'] LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS generation_wh double precision
                            CHECK (generation_wh >= 0)', t);
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS export_wh double precision
                            CHECK (export_wh >= 0)', t);
    END LOOP;
END $$;

-- What the supplier pays per kWh given to the grid (a feed-in or export tariff), per version.
-- Billed as a credit line after VAT (export payments to small generators carry none).
ALTER TABLE tariffs ADD COLUMN IF NOT EXISTS export_rate_minor_per_kwh numeric(14, 4) NOT NULL DEFAULT 0
    CHECK (export_rate_minor_per_kwh >= 0);
