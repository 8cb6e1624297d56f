"""Unify: identity resolution of events into profiles (deterministic rules in the pipeline, probabilistic dedupe of records)."""
