-- The alert-rule builder: a rule's severity, when it is armed, and who hears of it.

ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS severity text NOT NULL DEFAULT 'warning'
    CHECK (severity IN ('info', 'warning', 'critical'));
-- {"days": ["mon", …], "hours": ["HH:MM", "HH:MM"]} in the site's local time; NULL: always.
-- An episode is opened only when its condition starts inside the schedule.
ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS schedule jsonb;
-- People of the customer and plain addresses, told by mail (as their preferences say).
ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS recipient_user_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS recipient_emails text[] NOT NULL DEFAULT '{}';
-- The customer's webhooks that receive this rule's alerts; NULL: every one (as before).
ALTER TABLE alert_rules ADD COLUMN IF NOT EXISTS webhook_ids bigint[];
-- Bridge-offline episodes were raised as critical by the evaluator; the rule now says so.
UPDATE alert_rules SET severity = 'critical' WHERE kind = 'bridge_offline' AND severity = 'warning';
