"""Consent and subscriptions: per channel and topic, derived from events; and the suppression list."""
