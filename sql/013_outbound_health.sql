-- Failures stay where they start, and users can see them: a rule or a webhook that keeps
-- failing carries its last error and since when; a webhook whose deliveries keep being
-- given up on (each after every retry) is suspended with a reason (no more attempts until
-- a user resumes it).
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS failing_since timestamptz;
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS deliveries_given_up integer NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS suspended_at timestamptz;
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS suspended_reason text;

ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS failing_since timestamptz;
