-- Sites and their electrical hierarchy, bridges and sensors.

CREATE TABLE IF NOT EXISTS sites (
    id              bigserial PRIMARY KEY,
    customer_id     bigint NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    name            text NOT NULL CHECK (length(btrim(name)) > 0),
    timezone        text NOT NULL DEFAULT 'UTC',
    country         char(2) NOT NULL DEFAULT 'GB' CHECK (country ~ '^[A-Z]{2}$'),
    subdivision     text,
    address         text,
    latitude        double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision CHECK (longitude BETWEEN -180 AND 180),
    floor_area_m2   double precision CHECK (floor_area_m2 > 0),
    -- {"mon": ["07:00", "19:00"], ...}; absent day = closed.
    opening_hours   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, name)
);

CREATE OR REPLACE FUNCTION wl_check_timezone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.timezone) THEN
        RAISE EXCEPTION 'unknown time zone: %', NEW.timezone USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS sites_timezone ON sites;
CREATE TRIGGER sites_timezone BEFORE INSERT OR UPDATE OF timezone ON sites
    FOR EACH ROW EXECUTE FUNCTION wl_check_timezone();

-- One table for the whole tree: a site root, panels (distribution boards), circuits
-- and devices. A sub-panel hangs off a circuit. Rollups key on node id at every level.
CREATE TABLE IF NOT EXISTS nodes (
    id                  bigserial PRIMARY KEY,
    site_id             bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    parent_id           bigint REFERENCES nodes (id) ON DELETE RESTRICT,
    kind                text NOT NULL CHECK (kind IN ('site', 'panel', 'circuit', 'device')),
    name                text NOT NULL CHECK (length(btrim(name)) > 0),
    external_ref        text,
    nominal_voltage_v   real CHECK (nominal_voltage_v > 0 AND nominal_voltage_v < 100000),
    power_factor        real CHECK (power_factor > 0 AND power_factor <= 1),
    connection          text CHECK (connection IN
                            ('single_phase', 'split_phase', 'three_phase_wye', 'three_phase_delta')),
    asset_type          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'site') = (parent_id IS NULL)),
    CHECK (kind <> 'panel' OR (nominal_voltage_v IS NOT NULL AND power_factor IS NOT NULL
                               AND connection IS NOT NULL)),
    UNIQUE (site_id, external_ref)
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_one_root_per_site ON nodes (site_id) WHERE kind = 'site';
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes (parent_id);

-- Parent rules: panel under site or circuit; circuit under panel; device under circuit;
-- parent in the same site; no cycles.
CREATE OR REPLACE FUNCTION wl_check_node_parent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_kind text;
    parent_site bigint;
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT kind, site_id INTO parent_kind, parent_site FROM nodes WHERE id = NEW.parent_id;
    IF parent_site <> NEW.site_id THEN
        RAISE EXCEPTION 'node parent % belongs to another site', NEW.parent_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT ((NEW.kind = 'panel' AND parent_kind IN ('site', 'circuit'))
         OR (NEW.kind = 'circuit' AND parent_kind = 'panel')
         OR (NEW.kind = 'device' AND parent_kind = 'circuit')) THEN
        RAISE EXCEPTION 'a % cannot hang off a %', NEW.kind, parent_kind
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND EXISTS (
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM nodes WHERE id = NEW.parent_id
            UNION ALL
            SELECT n.id, n.parent_id FROM nodes n JOIN up ON n.id = up.parent_id
        ) SELECT 1 FROM up WHERE id = NEW.id) THEN
        RAISE EXCEPTION 'moving node % under % would make a cycle', NEW.id, NEW.parent_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS nodes_parent_rules ON nodes;
CREATE TRIGGER nodes_parent_rules BEFORE INSERT OR UPDATE OF parent_id, kind, site_id ON nodes
    FOR EACH ROW EXECUTE FUNCTION wl_check_node_parent();

-- Every site gets its root node, so that site totals are rollups like any other node's.
CREATE OR REPLACE FUNCTION wl_site_root() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO nodes (site_id, kind, name) VALUES (NEW.id, 'site', NEW.name);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS sites_root_node ON sites;
CREATE TRIGGER sites_root_node AFTER INSERT ON sites
    FOR EACH ROW EXECUTE FUNCTION wl_site_root();

CREATE TABLE IF NOT EXISTS bridges (
    id                  bigserial PRIMARY KEY,
    serial              text NOT NULL UNIQUE CHECK (serial ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    site_id             bigint NOT NULL REFERENCES sites (id) ON DELETE RESTRICT,
    name                text NOT NULL DEFAULT '',
    mqtt_password_hash  text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Latest retained status per bridge, mirrored from wattline/v1/bridges/+/status.
CREATE TABLE IF NOT EXISTS bridge_status (
    bridge_id   bigint PRIMARY KEY REFERENCES bridges (id) ON DELETE CASCADE,
    online      boolean NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- Every sensor ever heard from. One that reports before an installer assigns it is
-- "discovered" (node_id IS NULL): its readings are kept and counted once assigned.
CREATE TABLE IF NOT EXISTS sensors (
    id              bigserial PRIMARY KEY,
    serial          text NOT NULL UNIQUE CHECK (serial ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    bridge_id       bigint NOT NULL REFERENCES bridges (id) ON DELETE RESTRICT,
    node_id         bigint REFERENCES nodes (id) ON DELETE RESTRICT,
    phase           smallint CHECK (phase BETWEEN 1 AND 3),
    ct_rating_a     real CHECK (ct_rating_a > 0),
    assigned_at     timestamptz,
    first_seen_at   timestamptz,
    last_seen_at    timestamptz,
    last_current_a  real,
    last_rssi_dbw   real,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((node_id IS NULL) = (phase IS NULL)),
    CHECK (node_id IS NULL OR ct_rating_a IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS sensors_node ON sensors (node_id);
CREATE INDEX IF NOT EXISTS sensors_bridge ON sensors (bridge_id);
CREATE UNIQUE INDEX IF NOT EXISTS sensors_one_per_phase ON sensors (node_id, phase) WHERE node_id IS NOT NULL;

CREATE OR REPLACE VIEW discovered_sensors AS
    SELECT s.id, s.serial, s.bridge_id, b.site_id, s.first_seen_at, s.last_seen_at,
           s.last_current_a, s.last_rssi_dbw
    FROM sensors s JOIN bridges b ON b.id = s.bridge_id
    WHERE s.node_id IS NULL;
