"""The marts' SQL on DuckDB and PostgreSQL over a small hand-made dataset, and for Redshift."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import sqlalchemy as sa

from appdata.analytics import marts
from appdata.contract.schema import EVENT_COLUMNS, coerce_event_frame
from appdata.warehouse.loader import create_schema, replace_all
from appdata_tests.support.analytics import D, event, hand_made, load_warehouse

def load(url: str) -> sa.Engine:
    return load_warehouse(url, *hand_made())


def rows(engine: sa.Engine, name: str) -> list[tuple]:
    frame = marts.read_mart(engine, name)
    return [tuple(r) for r in frame.itertuples(index=False)]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest) -> sa.Engine:
    url = request.getfixturevalue("duckdb_url" if request.param == "duckdb" else "postgres_url")
    engine = load(url)
    yield engine
    engine.dispose()


def test_every_mart_builds_with_the_right_numbers(warehouse: sa.Engine) -> None:
    built = marts.build_all_marts(warehouse)
    assert {name: b.rows for name, b in built.items()} == {
        "mart_downloads_daily": 7, "mart_audience": 7, "mart_time_spent": 7, "mart_charts": 5,
        "mart_download_facts": 9,  # user 3's two Go downloads on 2024-02-01 are one row
    }
    with warehouse.connect() as conn:  # each build says when it ran and how far its inputs go
        builds = {r[0]: (int(r[1]), r[2]) for r in conn.execute(
            sa.text("SELECT mart, row_count, data_through FROM mart_builds"))}
    assert {name: rows for name, (rows, _) in builds.items()} == {name: b.rows for name, b in built.items()}
    assert {str(through)[:10] for _, through in builds.values()} == {"2024-03-31"}
    facts = {(r[0], r[2], r[5]): (int(r[6]), int(r[7])) for r in rows(warehouse, "mart_download_facts")}
    assert facts[(D(2024, 2, 1), "Go", 3)] == (2, 10)

    daily = {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows(warehouse, "mart_downloads_daily")}
    assert daily[(D(2024, 3, 1), "GAME")] == (1, 1)
    assert daily[(D(2024, 2, 1), "GAME")] == (2, 1)  # two downloads, one distinct user
    assert daily[(D(2024, 3, 2), "GAME")] == (3, 3)  # one batch and two stream downloads
    assert daily[(D(2024, 3, 2), "FINANCE")] == (1, 1)

    audience = {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in rows(warehouse, "mart_audience")}
    assert audience[("13-17", "Ohio", "GAME")] == (2, 1)  # batch + stream download of user 1
    assert audience[("18-24", "Texas", "GAME")] == (2, 2)
    assert audience[("25-34", "Texas", "GAME")] == (1, 1)
    assert audience[("65+", "Ohio", "GAME")] == (2, 1)
    assert audience[("45-54", "Ohio", "GAME")] == (1, 1)

    spent = {(r[0], r[1]): (int(r[2]), int(r[3]), float(r[4])) for r in rows(warehouse, "mart_time_spent")}
    assert spent[("GAME", "13-17")] == (2, 45, 22.5)
    assert spent[("GAME", "18-24")] == (2, 100, 50.0)
    assert spent[("GAME", "65+")] == (2, 10, 5.0)

    charts = rows(warehouse, "mart_charts")
    game = [(int(r[1]), r[2], int(r[3])) for r in charts if r[0] == "GAME"]
    # Chess: 2 downloads in the window; Puzzle/Poker/Racer: 1 each, ties by rating then installs.
    # Go is outside the trailing 30 days.
    assert game == [(1, "Chess", 2), (2, "Puzzle", 1), (3, "Racer", 1), (4, "Poker", 1)]
    assert {r[2] for r in charts if r[0] == "FINANCE"} == {"Bank"}
    assert built["mart_charts"].window == (D(2024, 3, 2), D(2024, 3, 31))


def test_rebuild_replaces_instead_of_appending(warehouse: sa.Engine) -> None:
    first = marts.build_all_marts(warehouse)
    again = marts.build_all_marts(warehouse)
    assert {n: b.rows for n, b in first.items()} == {n: b.rows for n, b in again.items()}


def test_chart_keeps_only_the_top_ten(duckdb_url: str) -> None:
    engine = sa.create_engine(duckdb_url, poolclass=sa.pool.NullPool)
    create_schema(engine)
    events = [event(i, i, 30, "Ohio", f"App{i:02d}", "TOOLS", D(2024, 1, 1), 10, installs=i) for i in range(1, 16)]
    replace_all(engine, "downloads_batch", coerce_event_frame(pd.DataFrame(events, columns=list(EVENT_COLUMNS))))
    assert marts.build_mart(engine, "mart_charts").rows == 10
    chart = rows(engine, "mart_charts")
    # All tie on downloads and rating: the most installed come first.
    assert [r[2] for r in chart][:3] == ["App15", "App14", "App13"]
    assert [int(r[1]) for r in chart] == list(range(1, 11))


def test_readers_never_see_an_empty_mart_during_a_rebuild(postgres_url: str) -> None:
    engine = load(postgres_url)
    marts.build_all_marts(engine)
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        reader = sa.create_engine(postgres_url)
        while not stop.is_set():
            with reader.connect() as conn:
                seen.append(int(conn.execute(sa.text("SELECT COUNT(*) FROM mart_audience")).scalar_one()))
        reader.dispose()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(10):
            marts.build_mart(engine, "mart_audience")
    finally:
        stop.set()
        thread.join()
    assert seen and min(seen) == 7


def test_empty_warehouse_gives_empty_marts(duckdb_url: str) -> None:
    engine = sa.create_engine(duckdb_url, poolclass=sa.pool.NullPool)
    built = marts.build_all_marts(engine)
    assert all(b.rows == 0 for b in built.values())


def test_mart_sql_compiles_and_parses_for_redshift() -> None:
    from sqlalchemy.schema import CreateTable
    from sqlalchemy_redshift.dialect import RedshiftDialect_psycopg2
    import sqlglot

    dialect = RedshiftDialect_psycopg2()
    for name, table in marts.MARTS.items():
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert ("DISTSTYLE ALL" in ddl) != ("DISTKEY (user_id)" in ddl)  # small marts everywhere; facts by user
        for sql in (marts.insert_sql(name), marts.delete_sql(name)):
            compiled = str(sa.text(sql).compile(dialect=dialect))
            assert "INSERT INTO" in compiled or "DELETE FROM" in compiled
            # A real SQL parser with Redshift's grammar accepts every statement.
            parsed = sqlglot.parse_one(compiled.replace("%(window_start)s", "'2024-01-01'")
                                       .replace("%(window_end)s", "'2024-01-31'"), read="redshift")
            assert parsed is not None
    # No dialect-only syntax sneaks in: these are the usual suspects.
    for sql in marts.SELECTS.values():
        for token in ("::", "ILIKE", "DATE_TRUNC", "DATEADD", "INTERVAL", "LIMIT", "QUALIFY", "FILTER ("):
            assert token not in sql.upper(), token
