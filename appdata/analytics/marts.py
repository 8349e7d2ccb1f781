"""The analytics marts: portable SQL over batch and stream downloads, rebuilt atomically.

Every statement here runs unchanged on DuckDB, PostgreSQL and Redshift: plain GROUP BY,
CASE, CAST(... AS DOUBLE PRECISION), ROW_NUMBER() OVER, and bound parameters for the chart
window (so no dialect's date arithmetic is needed). A rebuild is DELETE + INSERT ... SELECT
in one transaction, so a reader sees the old mart or the new one, never an empty table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from appdata.analytics.published import publish
from appdata.sources.users import AGE_BANDS

CHART_DAYS = 30
CHART_SIZE = 10

mart_metadata = sa.MetaData()

mart_downloads_daily = sa.Table(
    "mart_downloads_daily", mart_metadata,
    sa.Column("download_date", sa.Date(), nullable=False),
    sa.Column("category", sa.String(1024), nullable=False),
    sa.Column("downloads", sa.BigInteger(), nullable=False),
    sa.Column("users", sa.BigInteger(), nullable=False),
    redshift_diststyle="ALL", redshift_sortkey=("download_date",),
)
mart_audience = sa.Table(
    "mart_audience", mart_metadata,
    sa.Column("age_band", sa.String(16), nullable=False),
    sa.Column("location", sa.String(1024), nullable=False),
    sa.Column("category", sa.String(1024), nullable=False),
    sa.Column("downloads", sa.BigInteger(), nullable=False),
    sa.Column("users", sa.BigInteger(), nullable=False),
    redshift_diststyle="ALL",
)
mart_time_spent = sa.Table(
    "mart_time_spent", mart_metadata,
    sa.Column("category", sa.String(1024), nullable=False),
    sa.Column("age_band", sa.String(16), nullable=False),
    sa.Column("downloads", sa.BigInteger(), nullable=False),
    sa.Column("total_minutes", sa.BigInteger(), nullable=False),
    sa.Column("avg_minutes", sa.Float(53), nullable=False),
    redshift_diststyle="ALL",
)
mart_charts = sa.Table(
    "mart_charts", mart_metadata,
    sa.Column("category", sa.String(1024), nullable=False),
    sa.Column("chart_rank", sa.BigInteger(), nullable=False),
    sa.Column("app", sa.String(1024), nullable=False),
    sa.Column("downloads", sa.BigInteger(), nullable=False),
    sa.Column("users", sa.BigInteger(), nullable=False),
    sa.Column("rating", sa.Float(53), nullable=False),
    sa.Column("installs", sa.BigInteger(), nullable=False),
    sa.Column("window_start", sa.Date(), nullable=False),
    sa.Column("window_end", sa.Date(), nullable=False),
    redshift_diststyle="ALL",
)
mart_download_facts = sa.Table(
    "mart_download_facts", mart_metadata,
    sa.Column("download_date", sa.Date(), nullable=False),
    sa.Column("category", sa.String(1024), nullable=False),
    sa.Column("app", sa.String(1024), nullable=False),
    sa.Column("age_band", sa.String(16), nullable=False),
    sa.Column("location", sa.String(1024), nullable=False),
    sa.Column("user_id", sa.BigInteger(), nullable=False),
    sa.Column("downloads", sa.BigInteger(), nullable=False),
    sa.Column("minutes_spent", sa.BigInteger(), nullable=False),
    redshift_diststyle="KEY", redshift_distkey="user_id", redshift_sortkey=("download_date",),
)
# When each mart was last rebuilt and how far its data goes: the dashboard's freshness line.
mart_builds = sa.Table(
    "mart_builds", mart_metadata,
    sa.Column("mart", sa.String(64), primary_key=True),
    sa.Column("built_at", sa.DateTime(), nullable=False),  # UTC
    sa.Column("row_count", sa.BigInteger(), nullable=False),
    sa.Column("data_through", sa.Date(), nullable=True),  # latest download date in the inputs
    redshift_diststyle="ALL",
)

# Both download tables with the columns the marts read; the one place batch and stream meet.
ALL_DOWNLOADS = """(
    SELECT user_id, age, location, app, category, rating, installs, minutes_spent, download_date
    FROM downloads_batch
    UNION ALL
    SELECT user_id, age, location, app, category, rating, installs, minutes_spent, download_date
    FROM downloads_stream
)"""


def age_band_case(column: str = "age") -> str:
    """CASE expression mapping an age to the bands of appdata.sources.users.AGE_BANDS."""
    whens = " ".join(f"WHEN {column} BETWEEN {low} AND {high} THEN '{label}'" for low, high, label in AGE_BANDS)
    return f"CASE {whens} ELSE '{AGE_BANDS[-1][2]}' END"


SELECTS: dict[str, str] = {
    "mart_downloads_daily": f"""
SELECT d.download_date, d.category, COUNT(*) AS downloads, COUNT(DISTINCT d.user_id) AS users
FROM {ALL_DOWNLOADS} d
GROUP BY d.download_date, d.category""",
    "mart_audience": f"""
SELECT a.age_band, a.location, a.category, COUNT(*) AS downloads, COUNT(DISTINCT a.user_id) AS users
FROM (SELECT {age_band_case('d.age')} AS age_band, d.location, d.category, d.user_id
      FROM {ALL_DOWNLOADS} d) a
GROUP BY a.age_band, a.location, a.category""",
    "mart_time_spent": f"""
SELECT t.category, t.age_band, COUNT(*) AS downloads, SUM(t.minutes_spent) AS total_minutes,
       AVG(CAST(t.minutes_spent AS DOUBLE PRECISION)) AS avg_minutes
FROM (SELECT d.category, {age_band_case('d.age')} AS age_band, d.minutes_spent
      FROM {ALL_DOWNLOADS} d) t
GROUP BY t.category, t.age_band""",
    "mart_charts": f"""
SELECT r.category, r.chart_rank, r.app, r.downloads, r.users, r.rating, r.installs,
       CAST(:window_start AS DATE) AS window_start, CAST(:window_end AS DATE) AS window_end
FROM (
    SELECT a.category, a.app, a.downloads, a.users, a.rating, a.installs,
           ROW_NUMBER() OVER (PARTITION BY a.category
                              ORDER BY a.downloads DESC, a.rating DESC, a.installs DESC, a.app) AS chart_rank
    FROM (
        SELECT d.category, d.app, COUNT(*) AS downloads, COUNT(DISTINCT d.user_id) AS users,
               MAX(d.rating) AS rating, MAX(d.installs) AS installs
        FROM {ALL_DOWNLOADS} d
        WHERE d.download_date >= :window_start AND d.download_date <= :window_end
        GROUP BY d.category, d.app
    ) a
) r
WHERE r.chart_rank <= {CHART_SIZE}""",
    # One row per user, app and day with the dimensions the dashboard filters on; the dashboard
    # aggregates it with COUNT(DISTINCT user_id) so every group's user count is exact.
    "mart_download_facts": f"""
SELECT f.download_date, f.category, f.app, f.age_band, f.location, f.user_id,
       COUNT(*) AS downloads, SUM(f.minutes_spent) AS minutes_spent
FROM (SELECT d.download_date, d.category, d.app, {age_band_case('d.age')} AS age_band, d.location, d.user_id,
             d.minutes_spent
      FROM {ALL_DOWNLOADS} d) f
GROUP BY f.download_date, f.category, f.app, f.age_band, f.location, f.user_id""",
}

LATEST_DATE_SQL = f"SELECT MAX(d.download_date) AS latest FROM {ALL_DOWNLOADS} d"

MARTS: dict[str, sa.Table] = {t.name: t for t in (mart_downloads_daily, mart_audience, mart_time_spent, mart_charts,
                                                   mart_download_facts)}


def insert_sql(name: str) -> str:
    """The INSERT ... SELECT that fills mart `name` (column list explicit, order as the table)."""
    columns = ", ".join(c.name for c in MARTS[name].columns)
    return f"INSERT INTO {name} ({columns}){SELECTS[name]}"


def delete_sql(name: str) -> str:
    return f"DELETE FROM {name}"


def ensure_marts(engine: sa.Engine) -> None:
    """Create the mart tables (and the download tables they read) where missing."""
    from appdata.warehouse.loader import create_schema

    create_schema(engine)
    mart_metadata.create_all(engine, checkfirst=True)


def _latest_date(conn: sa.Connection) -> dt.date | None:
    latest = conn.execute(sa.text(LATEST_DATE_SQL)).scalar_one()
    if isinstance(latest, str):
        latest = dt.date.fromisoformat(latest[:10])
    if isinstance(latest, dt.datetime):
        latest = latest.date()
    return latest


def chart_window(conn: sa.Connection, days: int = CHART_DAYS,
                 latest: dt.date | None = None) -> tuple[dt.date, dt.date] | None:
    """The trailing `days`-day window ending on the latest download date (None: no downloads)."""
    latest = latest or _latest_date(conn)
    if latest is None:
        return None
    return latest - dt.timedelta(days=days - 1), latest


@dataclass(frozen=True)
class MartBuild:
    name: str
    rows: int
    window: tuple[dt.date, dt.date] | None = None


def build_mart(engine: sa.Engine, name: str) -> MartBuild:
    """Rebuild one mart atomically: DELETE + INSERT ... SELECT in one transaction, which also
    records in mart_builds when it was built and up to which download date."""
    ensure_marts(engine)
    with engine.begin() as conn:
        params: dict = {}
        window = None
        latest = _latest_date(conn)
        if name == "mart_charts":
            window = chart_window(conn, latest=latest)
            if window is None:  # no downloads at all: an empty chart, same transaction shape
                window = (dt.date(1970, 1, 1), dt.date(1970, 1, 1))
            params = {"window_start": window[0], "window_end": window[1]}
        conn.execute(sa.text(delete_sql(name)))
        conn.execute(sa.text(insert_sql(name)), params)
        rows = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one())
        conn.execute(mart_builds.delete().where(mart_builds.c.mart == name))
        conn.execute(mart_builds.insert().values(
            mart=name, built_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0),
            row_count=rows, data_through=latest))
    publish(engine)
    return MartBuild(name=name, rows=rows, window=window)


def build_all_marts(engine: sa.Engine) -> dict[str, MartBuild]:
    return {name: build_mart(engine, name) for name in MARTS}


def read_mart(engine: sa.Engine, name: str) -> pd.DataFrame:
    """The whole mart as a frame, in a stable order (empty frame if the mart does not exist)."""
    table = MARTS[name]
    order = ", ".join(c.name for c in table.columns)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(name):
            return pd.DataFrame(columns=[c.name for c in table.columns])
        result = conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY {order}"))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
