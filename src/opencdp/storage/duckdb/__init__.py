from opencdp.storage.duckdb.backend import DuckDBBackend

__all__ = ["DuckDBBackend"]
