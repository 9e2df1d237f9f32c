-- One rule for a node's electrical parameters, and the rollup queue's former nodes.

-- Nodes a queued change took sensors away from (an unassignment, a move): the worker
-- rebuilds their own-meter rows over the queued span from the sensors they have left.
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS node_ids bigint[] NOT NULL DEFAULT '{}';

-- Each of voltage, power factor and connection: the node's own value, else the nearest
-- node above it that sets one (NULL where none does; callers apply the physics defaults).
-- Used by the rollup worker and every reader through wattline.electrical.
CREATE OR REPLACE FUNCTION node_electrics(ids bigint[])
RETURNS TABLE (node_id bigint, nominal_voltage_v real, power_factor real, connection text)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up AS (
        SELECT n.id AS node_id, n.parent_id, 0 AS depth, n.nominal_voltage_v, n.power_factor, n.connection
        FROM nodes n WHERE n.id = ANY(ids)
        UNION ALL
        SELECT up.node_id, p.parent_id, up.depth + 1, p.nominal_voltage_v, p.power_factor, p.connection
        FROM up JOIN nodes p ON p.id = up.parent_id
    )
    SELECT up.node_id,
           (array_agg(up.nominal_voltage_v ORDER BY up.depth) FILTER (WHERE up.nominal_voltage_v IS NOT NULL))[1],
           (array_agg(up.power_factor ORDER BY up.depth) FILTER (WHERE up.power_factor IS NOT NULL))[1],
           (array_agg(up.connection ORDER BY up.depth) FILTER (WHERE up.connection IS NOT NULL))[1]
    FROM up GROUP BY up.node_id
$$;
