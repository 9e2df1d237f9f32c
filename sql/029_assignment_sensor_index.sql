-- The rollup worker looks up the assignment spans of the sensors a pass covers
-- (`sensor_id = ANY(...)`, thousands of ids). The exclusion constraint's GiST index on
-- (sensor_id, range) cannot answer an = ANY(array) scan, so each lookup read the whole
-- table: a quarter of a pass at 8 sites, and it grows with the fleet, not with the pass.
CREATE INDEX IF NOT EXISTS sensor_assignments_sensor ON sensor_assignments (sensor_id, valid_from);
