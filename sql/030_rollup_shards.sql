-- The gateway queues a minute's rollup work per shard of sites (site id modulo
-- `rollup_queue_shards`), so that several rollup workers split a real-time minute: each
-- claims some shards for a pass. NULL: work over any sites (catalogue changes, retries).
-- The shard only spreads the work; correctness rests on the per-site write locks.
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS shard integer;
