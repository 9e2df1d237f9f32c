-- A real-time minute re-computes the minute before it only when it must (analytics.worker,
-- wattline.rollup_queue): the integration segment from a sensor's last reading of the
-- minute before to its first of this one lies partly in the minute before, so that minute
-- is stale if this first reading was stored after the minute before was read.
-- rollup_minutes_read: the (shard, minute)s whose queued work a pass has read, written under
-- an exclusive per-(shard, minute) lock that the gateway tries shared before it looks here.
CREATE TABLE IF NOT EXISTS rollup_minutes_read (
    shard   integer NOT NULL,
    minute  timestamptz NOT NULL,
    PRIMARY KEY (shard, minute)
);
CREATE INDEX IF NOT EXISTS rollup_minutes_read_minute ON rollup_minutes_read (minute);
-- The gateway's word on a queue row: true unless none of its readings can change the minute
-- before. Anything else that queues work (catalogue changes, retries) keeps the default.
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS left_pad boolean NOT NULL DEFAULT true;
