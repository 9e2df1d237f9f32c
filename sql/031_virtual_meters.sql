-- Virtual meters: a named group of nodes with + and − terms (a cost centre, a production
-- line, a tenant), across the tree of one site or the sites of one customer. A term is a
-- node or another virtual meter; `wattline.virtual_meters` refuses cycles and double
-- counting before anything is stored. Their series are composed from the nodes' rollups
-- when read: the rollups already hold every node, and a sum of terms stays exact.
CREATE TABLE IF NOT EXISTS virtual_meters (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, name)
);

CREATE TABLE IF NOT EXISTS virtual_meter_terms (
    meter_id      bigint NOT NULL REFERENCES virtual_meters (id) ON DELETE CASCADE,
    position      smallint NOT NULL CHECK (position >= 0),
    -- a node in use cannot be deleted, nor a meter that another one counts
    node_id       bigint REFERENCES nodes (id) ON DELETE RESTRICT,
    part_meter_id bigint REFERENCES virtual_meters (id) ON DELETE RESTRICT,
    sign          smallint NOT NULL CHECK (sign IN (-1, 1)),
    PRIMARY KEY (meter_id, position),
    CHECK ((node_id IS NULL) <> (part_meter_id IS NULL))
);
CREATE INDEX IF NOT EXISTS virtual_meter_terms_node ON virtual_meter_terms (node_id) WHERE node_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS virtual_meter_terms_part ON virtual_meter_terms (part_meter_id)
    WHERE part_meter_id IS NOT NULL;

-- Export jobs deliver the customer's virtual meters beside the sites' measurements.
ALTER TABLE export_runs DROP CONSTRAINT IF EXISTS export_runs_kind_check;
ALTER TABLE export_runs ADD CONSTRAINT export_runs_kind_check
    CHECK (kind IN ('measurements', 'catalog', 'virtual_meters'));
