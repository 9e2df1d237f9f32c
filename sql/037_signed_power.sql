-- Meters that measure signed real power (wattline/generation.py, "Signed meters"): the
-- reading's own power in W, positive flowing into the node's loads, negative flowing back
-- out towards the supply. NULL for a clamp, whose power is V × I × PF and whose direction
-- is its node's flow.
ALTER TABLE readings ADD COLUMN IF NOT EXISTS power_w real;

-- Declared by the installer or the reseller: the sensor is such a meter. Its node's net is
-- then read from the sign, per minute, and it may sit above generation.
ALTER TABLE sensors ADD COLUMN IF NOT EXISTS reports_power boolean NOT NULL DEFAULT false;
