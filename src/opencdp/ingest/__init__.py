"""Collect: the Segment-compatible tracking pipeline and bulk imports.

request -> ``segment.normalize`` -> ``wal.WriteAheadLog`` (durable, acknowledged)
-> ``loader.Loader`` -> storage backend.
"""
