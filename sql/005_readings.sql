-- Raw readings: one row per (sensor, time), whether the sensor is assigned or not.
CREATE TABLE IF NOT EXISTS readings (
    sensor_id       bigint NOT NULL,
    ts              timestamptz NOT NULL,
    current_a       real NOT NULL CHECK (current_a >= 0),
    voltage_v       real CHECK (voltage_v > 0),
    power_factor    real CHECK (power_factor > 0 AND power_factor <= 1),
    rssi_dbw        real,
    bridge_id       bigint NOT NULL,
    -- clock_timestamp(), not now(): the moment the row was written, not when its
    -- transaction began (the sensor-to-row latency is measured from it).
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The hypertable's unique index makes resends harmless (ON CONFLICT DO NOTHING).
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE);
CREATE UNIQUE INDEX IF NOT EXISTS readings_sensor_ts ON readings (sensor_id, ts);

-- Whatever the gateway could not accept, byte for byte, with the reason.
CREATE TABLE IF NOT EXISTS rejected_readings (
    id              bigserial,
    received_at     timestamptz NOT NULL DEFAULT now(),
    topic           text NOT NULL,
    bridge_serial   text,
    sensor_serial   text,
    reason          text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    payload         bytea NOT NULL,
    PRIMARY KEY (id, received_at)
);
SELECT create_hypertable('rejected_readings', by_range('received_at', INTERVAL '7 days'), if_not_exists => TRUE);
CREATE INDEX IF NOT EXISTS rejected_readings_reason ON rejected_readings (reason, received_at DESC);

-- Work queue of rollups to re-compute: the sensors that have readings in [ts_from, ts_to).
-- The gateway adds one row per touched minute in the same transaction that stores the
-- readings, so no batch is forgotten and a real-time batch costs a row or two.
CREATE TABLE IF NOT EXISTS rollup_dirty (
    id          bigserial PRIMARY KEY,
    ts_from     timestamptz NOT NULL,
    ts_to       timestamptz NOT NULL,
    sensor_ids  bigint[] NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ts_from <= ts_to)
);
-- Rows live seconds; compressing a batch's id array costs more than it saves.
ALTER TABLE rollup_dirty ALTER COLUMN sensor_ids SET STORAGE EXTERNAL;
