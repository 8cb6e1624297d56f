"""The `opencdp` command line."""
