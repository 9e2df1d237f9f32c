-- `readings` keeps one index, (sensor_id, ts). Every reader names its sensors (the rollups,
-- the API, commissioning, the alerts), and the packing job walks a day sensor by sensor; the
-- time index create_hypertable adds by default (ts DESC) was read by nothing, yet every
-- stored reading paid for it: COPYing the fleet's sweeps (1,000,500 sensors, 18 sweeps)
-- cost PostgreSQL 3.69 µs a row with it and 2.81 µs without, alternated in one run (4.62 and
-- 3.07 in another; `python -m bench readingsindex`). Chunks
-- are found by their time constraints without it, and drop_chunks needs none.
DROP INDEX IF EXISTS readings_ts_idx;
