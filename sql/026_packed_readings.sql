-- The packed tier of raw readings: one row per sensor and UTC day, its readings compressed
-- by the codec in wattline/packing.py (checksummed, lossless for what `readings` stores but
-- `received_at`, a write-time diagnostic). Days move here from `readings` once they are
-- older than the late-data window; every reader reads both tiers in one statement.
CREATE TABLE IF NOT EXISTS readings_packed (
    sensor_id       bigint NOT NULL,
    day             timestamptz NOT NULL,  -- UTC midnight that starts the period
    first_ts        timestamptz NOT NULL,
    last_ts         timestamptz NOT NULL,
    n               integer NOT NULL CHECK (n > 0),
    -- The reading's bridge, run-length coded: a sensor is heard through one bridge for
    -- days at a time, so this is one element almost always.
    bridge_ids      bigint[] NOT NULL,
    bridge_runs     integer[] NOT NULL,
    last_current_a  real NOT NULL,
    last_rssi_dbw   real,
    packed_at       timestamptz NOT NULL DEFAULT now(),
    data            bytea NOT NULL,
    PRIMARY KEY (sensor_id, day),
    CHECK (first_ts <= last_ts),
    CHECK (cardinality(bridge_ids) = cardinality(bridge_runs))
);
SELECT create_hypertable('readings_packed', by_range('day', INTERVAL '1 day'), if_not_exists => TRUE);
-- The codec's bytes do not compress again; pglz would only spend CPU finding that out.
ALTER TABLE readings_packed ALTER COLUMN data SET STORAGE EXTERNAL;

-- Days whose packing has begun. Ingest, holding a shared advisory lock on a day, reads
-- this to know whether a sensor's readings of that day may already be packed.
CREATE TABLE IF NOT EXISTS packed_days (
    day             timestamptz PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- A packed row whose checksum or structure failed: moved here byte for byte, never read
-- as data, kept for an operator (and retention) to deal with.
CREATE TABLE IF NOT EXISTS readings_packed_quarantine (
    sensor_id       bigint NOT NULL,
    day             timestamptz NOT NULL,
    reason          text NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    data            bytea NOT NULL,
    PRIMARY KEY (sensor_id, day, detected_at)
);

-- One round trip for ingest: shared locks on the batch's days (in order, so two batches
-- never deadlock), then which of them have begun packing. A VOLATILE function's second
-- statement takes a new snapshot, so it sees a packing transaction that committed while
-- the lock was awaited.
CREATE OR REPLACE FUNCTION wattline_lock_reading_days(days timestamptz[]) RETURNS timestamptz[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    d timestamptz;
    packed timestamptz[];
BEGIN
    FOR d IN SELECT DISTINCT x FROM unnest(days) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock_shared(20, (extract(epoch FROM d) / 86400)::integer);
    END LOOP;
    SELECT coalesce(array_agg(p.day), '{}') INTO packed FROM packed_days p WHERE p.day = ANY(days);
    RETURN packed;
END $$;

-- A sensor's newest reading from either tier: the packed row keeps its last reading's time,
-- current and RSSI in columns, so this never unpacks.
CREATE OR REPLACE FUNCTION wattline_last_reading(sensor bigint)
RETURNS TABLE (ts timestamptz, current_a real, rssi_dbw real)
LANGUAGE sql STABLE AS $$
    SELECT x.ts, x.current_a, x.rssi_dbw FROM (
        (SELECT r.ts, r.current_a, r.rssi_dbw FROM readings r WHERE r.sensor_id = sensor ORDER BY r.ts DESC LIMIT 1)
        UNION ALL
        (SELECT p.last_ts, p.last_current_a, p.last_rssi_dbw FROM readings_packed p WHERE p.sensor_id = sensor
         ORDER BY p.day DESC LIMIT 1)
    ) x ORDER BY x.ts DESC LIMIT 1
$$;
