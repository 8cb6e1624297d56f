"""Profiles: what the store knows about each person, derived from their events."""
