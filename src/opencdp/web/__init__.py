"""HTTP API: the Segment-compatible tracking API and the admin API."""
