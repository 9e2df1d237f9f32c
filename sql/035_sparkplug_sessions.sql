-- The Sparkplug B host's session per edge node (ingest/sparkplug_session.py), as of the
-- last batch committed: written in the same transaction as that batch's readings, so a
-- gateway that restarts resumes each session where the acked messages left it, and reads
-- what the broker redelivers (aliases and sequence numbers) without asking for a rebirth.
-- Ingest's own bookkeeping: no tenant data, nothing personal.
CREATE TABLE IF NOT EXISTS sparkplug_sessions (
    group_id    text NOT NULL,
    edge_node   text NOT NULL,
    bd_seq      integer NOT NULL CHECK (bd_seq BETWEEN 0 AND 255),
    seq         integer NOT NULL CHECK (seq BETWEEN 0 AND 255),
    aliases     jsonb NOT NULL DEFAULT '{}'::jsonb,  -- device -> {alias: metric name}
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, edge_node)
);
