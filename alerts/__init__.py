"""Alerts and insights: rules, their evaluation into episodes, and webhooks."""
