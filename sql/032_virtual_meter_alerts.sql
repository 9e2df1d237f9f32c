-- An alert rule may watch a virtual meter instead of a node: its power or energy, composed
-- from the meter's nodes (`alerts.evaluate`). A meter with rules cannot be deleted.
ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS virtual_meter_id bigint REFERENCES virtual_meters (id)
    ON DELETE RESTRICT;
ALTER TABLE alert_rules DROP CONSTRAINT IF EXISTS alert_rules_one_scope;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_one_scope CHECK (node_id IS NULL OR virtual_meter_id IS NULL);
CREATE INDEX IF NOT EXISTS alert_rules_meter ON alert_rules (virtual_meter_id) WHERE virtual_meter_id IS NOT NULL;
