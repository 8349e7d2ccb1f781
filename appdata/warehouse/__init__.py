"""Warehouse: table definitions and bulk, atomic, idempotent loads (DuckDB, PostgreSQL, Redshift)."""
