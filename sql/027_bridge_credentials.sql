-- Each bridge's MQTT credential (#21). The broker (Mosquitto's dynamic-security plugin)
-- holds the live copy; this table is what it should hold, and the broker sync
-- (`wattline broker-sync`) makes it so. The password itself is never stored: it is derived
-- from the deployment's secret key and this row's nonce (wattline/bridge_credentials.py),
-- so the sync can apply it again after a broker loses its state, and a copy of the
-- database alone reveals no password.
CREATE TABLE IF NOT EXISTS bridge_credentials (
    username            text PRIMARY KEY,  -- the bridge's serial, which is also its client id
    -- NULL once the bridge is deleted: the broker must drop the client, then the sync drops the row.
    bridge_id           bigint UNIQUE REFERENCES bridges (id) ON DELETE SET NULL,
    nonce               bytea NOT NULL,
    generation          integer NOT NULL DEFAULT 1,  -- +1 at each rotation
    issued_at           timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz,
    -- What the broker was last told, by the sync.
    applied_generation  integer NOT NULL DEFAULT 0,
    applied_revoked     boolean NOT NULL DEFAULT false,
    applied_at          timestamptz,
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text
);
-- The sync's work: rows whose broker state lags the row.
CREATE INDEX IF NOT EXISTS bridge_credentials_pending ON bridge_credentials (username)
    WHERE applied_generation <> generation
       OR applied_revoked <> (revoked_at IS NOT NULL OR bridge_id IS NULL);

-- Never used: bridges' passwords live in the broker and, derived, in bridge_credentials.
ALTER TABLE bridges DROP COLUMN IF EXISTS mqtt_password_hash;
