-- The coarser tiers and the price of real-time minutes, left to the close of their
-- 15-minute interval (analytics.worker, `Settings.rollup_coarse_delay_s`): a site's
-- interval once, however many minutes and shards touched it. A row is taken, with its
-- site's lock, when due; a failed one comes back later with its attempts counted.
CREATE TABLE IF NOT EXISTS rollup_coarse (
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    bucket      timestamptz NOT NULL,  -- the 15-minute interval's start
    not_before  timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    PRIMARY KEY (site_id, bucket)
);
CREATE INDEX IF NOT EXISTS rollup_coarse_due ON rollup_coarse (not_before);
