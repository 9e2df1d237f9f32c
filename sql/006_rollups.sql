-- Rollups per hierarchy node (circuits, panels, site roots) at four resolutions. One
-- table per resolution, so that retention can drop 1-minute chunks and keep the rest.
-- unmonitored_wh: for a node with its own sensor and monitored children, own − Σ children.
DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM (VALUES ('rollups_1m', INTERVAL '1 day'),
                                      ('rollups_15m', INTERVAL '7 days'),
                                      ('rollups_1h', INTERVAL '30 days'),
                                      ('rollups_1d', INTERVAL '365 days')) AS t(name, chunk)
    LOOP
        EXECUTE format($f$
            CREATE TABLE IF NOT EXISTS %I (
                node_id         bigint NOT NULL,
                bucket          timestamptz NOT NULL,
                energy_wh       double precision NOT NULL CHECK (energy_wh >= 0),
                mean_power_w    double precision NOT NULL,
                max_power_w     double precision NOT NULL,
                mean_current_a  double precision NOT NULL,
                samples         integer NOT NULL CHECK (samples >= 0),
                coverage        real NOT NULL CHECK (coverage >= 0 AND coverage <= 1.0001),
                unmonitored_wh  double precision,
                computed_at     timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (node_id, bucket)
            )$f$, spec.name);
        PERFORM create_hypertable(spec.name, by_range('bucket', spec.chunk), if_not_exists => TRUE);
    END LOOP;
END $$;
