-- Assignments have dates. A sensor measures a node's phase over [valid_from, valid_to);
-- the rollups attribute each of its minutes to the node it was assigned to then, so a move
-- from a time on leaves the earlier readings with the old circuit, and a failed sensor
-- replaced by another keeps the circuit's history continuous. Bounds fall on whole minutes
-- (the finest rollup), enforced by the core functions; '-infinity' means "since the sensor
-- first reported". sensors.node_id, phase, ct_rating_a and assigned_at stay as the current
-- (open) assignment, for the live views.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE IF NOT EXISTS sensor_assignments (
    id           bigserial PRIMARY KEY,
    sensor_id    bigint NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    node_id      bigint NOT NULL REFERENCES nodes (id) ON DELETE RESTRICT,
    phase        smallint NOT NULL CHECK (phase BETWEEN 1 AND 3),
    ct_rating_a  real NOT NULL CHECK (ct_rating_a > 0),
    valid_from   timestamptz NOT NULL DEFAULT '-infinity',
    valid_to     timestamptz NOT NULL DEFAULT 'infinity',
    -- how it began: assign (a discovered sensor), correct (re-pointed over its whole span),
    -- move (from a time on), replace (a new serial taking over a failed one's place)
    reason       text NOT NULL CHECK (reason IN ('assign', 'correct', 'move', 'replace')),
    assigned_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from < valid_to),
    EXCLUDE USING gist (sensor_id WITH =, tstzrange(valid_from, valid_to) WITH &&),
    EXCLUDE USING gist (node_id WITH =, phase WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
CREATE INDEX IF NOT EXISTS sensor_assignments_node ON sensor_assignments (node_id);

-- Today's assignments become open-ended ones over the sensor's whole history (what they meant).
INSERT INTO sensor_assignments (sensor_id, node_id, phase, ct_rating_a, reason, assigned_at)
SELECT id, node_id, phase, ct_rating_a, 'assign', COALESCE(assigned_at, now())
FROM sensors s WHERE node_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM sensor_assignments a WHERE a.sensor_id = s.id);

-- A site is commissioned when an installer says so (and may be re-opened).
ALTER TABLE sites ADD COLUMN IF NOT EXISTS commissioned_at timestamptz;
ALTER TABLE sites ADD COLUMN IF NOT EXISTS commissioned_by bigint REFERENCES users (id) ON DELETE SET NULL;

-- Access per site: a user with grants sees only those sites of their organisation (an
-- installer is let onto the sites they commission); a user without any sees them all.
CREATE TABLE IF NOT EXISTS user_site_grants (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    granted_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, site_id)
);
CREATE INDEX IF NOT EXISTS user_site_grants_site ON user_site_grants (site_id);
