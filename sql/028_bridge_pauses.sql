-- A bridge that reconnects in a tight loop is paused (#21): the broker sync sees its
-- connections in the broker's own log, disables its client for a cool-down that doubles
-- while the loop goes on (up to an hour), then enables it again. The pause is recorded
-- against that bridge alone; installers see it on the commissioning page and in the API.
ALTER TABLE bridge_credentials ADD COLUMN IF NOT EXISTS paused_until timestamptz;  -- the last pause's end
ALTER TABLE bridge_credentials ADD COLUMN IF NOT EXISTS pause_released boolean NOT NULL DEFAULT true;
ALTER TABLE bridge_credentials ADD COLUMN IF NOT EXISTS pause_level integer NOT NULL DEFAULT 0;  -- doublings
ALTER TABLE bridge_credentials ADD COLUMN IF NOT EXISTS pauses integer NOT NULL DEFAULT 0;
-- The sync's release work: pauses the broker still enforces.
CREATE INDEX IF NOT EXISTS bridge_credentials_paused ON bridge_credentials (paused_until)
    WHERE NOT pause_released;
