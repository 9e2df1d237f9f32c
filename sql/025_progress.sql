-- Progress of long work a person waits for: a sensor's history re-computed after it is
-- assigned (or moved), tracked through the rollup queue rows it added.
CREATE TABLE IF NOT EXISTS work_progress (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('backfill')),
    subject_type  text NOT NULL,
    subject_id    bigint NOT NULL,
    total         integer NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS work_progress_subject ON work_progress (subject_type, subject_id, id DESC);
ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS progress_id bigint REFERENCES work_progress (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS rollup_dirty_progress ON rollup_dirty (progress_id) WHERE progress_id IS NOT NULL;
