"""Storage: journal (append + fsync), Parquet shards, DuckDB catalog."""
