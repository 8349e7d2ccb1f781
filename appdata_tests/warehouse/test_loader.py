"""The bulk paths store every text the contract admits exactly as it is, on each dialect."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from appdata.contract import schema
from appdata.warehouse.loader import create_schema, insert_new, read_frame
from appdata_tests.support.events import make_event

AWKWARD = ["a\rb", "\\N", "a\r\nb", 'q"uote,\n x', "\\", "NULLS", "é\u2028", ",", '"', " x "]


@pytest.mark.parametrize("url", ["duckdb_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def test_awkward_text_round_trips_through_the_bulk_insert(url, request):
    engine = sa.create_engine(request.getfixturevalue(url))
    create_schema(engine)
    records = [make_event(i, event_id=f"e{i}", name=text, app=text, size_mb=None if i % 2 else 1.5)
               for i, text in enumerate(AWKWARD)]
    valid = schema.validate_records(schema.records_to_frame(records)).valid
    assert insert_new(engine, "downloads_stream", valid) == len(AWKWARD)
    stored = read_frame(engine, "SELECT event_id, name, app, size_mb FROM downloads_stream")
    typed = {r["event_id"]: r for r in schema.frame_to_records(valid)}
    for row in stored.itertuples():
        assert (row.name, row.app) == (typed[row.event_id]["name"], typed[row.event_id]["app"]), row
        assert (row.size_mb != row.size_mb) == (typed[row.event_id]["size_mb"] is None)  # NULL stays NULL
    engine.dispose()


@pytest.mark.parametrize("url, indexed", [("duckdb_url", False),
                                          pytest.param("postgres_url", True, marks=pytest.mark.postgres)])
def test_user_id_is_indexed_where_an_index_serves_a_few_users_lookup(url, indexed, request):
    """PostgreSQL gets a B-tree on user_id (the incremental recommendation refresh reads a few
    users' rows), also on a warehouse created before it; DuckDB none (its column scan is faster)."""
    from appdata.warehouse.tables import metadata

    engine = sa.create_engine(request.getfixturevalue(url))
    metadata.create_all(engine)  # the tables as an earlier version created them, without indexes
    create_schema(engine)
    create_schema(engine)  # idempotent
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            names = {r[0] for r in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
        else:
            names = {r[0] for r in conn.exec_driver_sql("SELECT index_name FROM duckdb_indexes()")}
    expected = {"ix_downloads_batch_user_id", "ix_downloads_stream_user_id"}
    assert (names == expected) if indexed else not names
    engine.dispose()
