"""The dashboard's own copy of the marts, so no writer ever locks a reader out.

An embedded DuckDB warehouse is one file with one writer: while a drain range, a batch load or a
mart rebuild holds it, a reader cannot open it (`Could not set lock on file`), and the dashboard
answered 503. After every mart rebuild the tables the dashboard reads are copied into a file of
their own beside the warehouse, written under a temporary name and renamed into place: a reader
opens the latest whole copy read-only, never waits for a writer, and one that opened the
previous copy keeps reading it. PostgreSQL and Redshift readers are not blocked by writers, so
they read the warehouse itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

# What the dashboard reads (appdata.analytics.dashboard): the facts and when each mart was built.
PUBLISHED_TABLES = ("mart_download_facts", "mart_builds")


def published_path(warehouse_url: str | sa.URL) -> Path | None:
    """`<warehouse>.dashboard.duckdb` beside a DuckDB warehouse file; None for other warehouses."""
    url = sa.engine.make_url(warehouse_url)
    if url.get_backend_name() != "duckdb" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    return path.with_name(path.stem + ".dashboard.duckdb")


def publish(engine: sa.Engine) -> Path | None:
    """Copy the published tables into a new file and rename it over the previous copy."""
    target = published_path(engine.url)
    if target is None:
        return None
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.execute(f"ATTACH '{staging}' AS published")
        try:
            for name in PUBLISHED_TABLES:
                raw.execute(f"CREATE TABLE published.{name} AS SELECT * FROM main.{name}")
        finally:
            raw.execute("DETACH published")
    os.replace(staging, target)
    return target
