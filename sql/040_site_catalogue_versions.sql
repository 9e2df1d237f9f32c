-- A site's catalogue version: what a rollup worker keeps of a site between passes (its tree,
-- who measures what, the nodes' electrical parameters; analytics.site_catalogues) stands
-- while the versions it was read at do. Every write to what those are made of takes a new
-- version for each site it touches, by trigger in the writing transaction, so no door (a
-- core function, plain SQL, a migration) can leave a worker's copy stale. Versions come
-- from one sequence: a number is never reused, whatever is truncated or re-created.
CREATE SEQUENCE IF NOT EXISTS site_catalogue_version;
CREATE TABLE IF NOT EXISTS site_catalogue_versions (
    site_id  bigint PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    version  bigint NOT NULL DEFAULT nextval('site_catalogue_version')
);

-- Sites in ascending order, so two writers touching the same sites lock them in one order.
-- A site being deleted (its nodes go with it) has nothing left to keep.
CREATE OR REPLACE FUNCTION bump_site_catalogues(site_ids bigint[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO site_catalogue_versions AS v (site_id)
    SELECT s.id FROM sites s WHERE s.id = ANY(site_ids) ORDER BY s.id
    ON CONFLICT (site_id) DO UPDATE SET version = nextval('site_catalogue_version')
$$;

-- Nodes: the tree, flows and electrical parameters of the sites they are (or were) at.
CREATE OR REPLACE FUNCTION nodes_bump_site_catalogues() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM bump_site_catalogues(ARRAY(SELECT DISTINCT site_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM bump_site_catalogues(ARRAY(SELECT DISTINCT site_id FROM old_rows));
    ELSE
        PERFORM bump_site_catalogues(ARRAY(SELECT site_id FROM old_rows UNION SELECT site_id FROM new_rows));
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS nodes_site_catalogues_insert ON nodes;
CREATE TRIGGER nodes_site_catalogues_insert AFTER INSERT ON nodes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nodes_bump_site_catalogues();
DROP TRIGGER IF EXISTS nodes_site_catalogues_update ON nodes;
CREATE TRIGGER nodes_site_catalogues_update AFTER UPDATE ON nodes REFERENCING OLD TABLE AS old_rows
    NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION nodes_bump_site_catalogues();
DROP TRIGGER IF EXISTS nodes_site_catalogues_delete ON nodes;
CREATE TRIGGER nodes_site_catalogues_delete AFTER DELETE ON nodes REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nodes_bump_site_catalogues();

-- Assignments: a worker keeps every span of a sensor with each site the sensor was ever
-- assigned at, so a change to any of its spans moves every one of those sites.
CREATE OR REPLACE FUNCTION bump_assignment_sites(sensor_ids bigint[], node_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    SELECT bump_site_catalogues(ARRAY(
        SELECT n.site_id FROM nodes n WHERE n.id = ANY(node_ids)
        UNION SELECT n.site_id FROM sensor_assignments a JOIN nodes n ON n.id = a.node_id
              WHERE a.sensor_id = ANY(sensor_ids)))
$$;
CREATE OR REPLACE FUNCTION assignments_bump_site_catalogues() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM bump_assignment_sites(ARRAY(SELECT sensor_id FROM new_rows), ARRAY(SELECT node_id FROM new_rows));
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM bump_assignment_sites(ARRAY(SELECT sensor_id FROM old_rows), ARRAY(SELECT node_id FROM old_rows));
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS assignments_site_catalogues_insert ON sensor_assignments;
CREATE TRIGGER assignments_site_catalogues_insert AFTER INSERT ON sensor_assignments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION assignments_bump_site_catalogues();
DROP TRIGGER IF EXISTS assignments_site_catalogues_update ON sensor_assignments;
CREATE TRIGGER assignments_site_catalogues_update AFTER UPDATE ON sensor_assignments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assignments_bump_site_catalogues();
DROP TRIGGER IF EXISTS assignments_site_catalogues_delete ON sensor_assignments;
CREATE TRIGGER assignments_site_catalogues_delete AFTER DELETE ON sensor_assignments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION assignments_bump_site_catalogues();

-- A sensor declared a meter (or no longer): every site it was ever assigned at.
CREATE OR REPLACE FUNCTION sensors_bump_site_catalogues() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bump_site_catalogues(ARRAY(
        SELECT DISTINCT n.site_id FROM new_rows nw JOIN old_rows o ON o.id = nw.id
        JOIN sensor_assignments a ON a.sensor_id = nw.id JOIN nodes n ON n.id = a.node_id
        WHERE nw.reports_power IS DISTINCT FROM o.reports_power));
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS sensors_site_catalogues_update ON sensors;
CREATE TRIGGER sensors_site_catalogues_update AFTER UPDATE ON sensors
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sensors_bump_site_catalogues();

-- TRUNCATE fires no row or statement trigger above: every kept copy goes.
CREATE OR REPLACE FUNCTION truncate_site_catalogues() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE site_catalogue_versions SET version = nextval('site_catalogue_version');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS nodes_site_catalogues_truncate ON nodes;
CREATE TRIGGER nodes_site_catalogues_truncate AFTER TRUNCATE ON nodes
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_site_catalogues();
DROP TRIGGER IF EXISTS assignments_site_catalogues_truncate ON sensor_assignments;
CREATE TRIGGER assignments_site_catalogues_truncate AFTER TRUNCATE ON sensor_assignments
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_site_catalogues();
DROP TRIGGER IF EXISTS sensors_site_catalogues_truncate ON sensors;
CREATE TRIGGER sensors_site_catalogues_truncate AFTER TRUNCATE ON sensors
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_site_catalogues();
