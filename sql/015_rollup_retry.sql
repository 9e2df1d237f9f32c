-- A failure stays where it starts: when one site's rollups cannot be computed, the worker
-- puts that site's work back with a delay and the reason, and goes on with every other site.
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS not_before timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS last_error text;
