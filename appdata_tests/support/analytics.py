"""Downloads for the analytics tests: a small set to count by hand, and seeded generated ones."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from appdata.sources.users import downloads_for_day, make_users
from appdata.analytics import marts
from appdata.contract.schema import EVENT_COLUMNS, coerce_event_frame
from appdata.warehouse.loader import create_schema, replace_all
from appdata_tests.support.events import make_event

FIRST_DAY = dt.date(2024, 1, 1)
D = dt.date


def event(n: int, user_id: int, age: int, location: str, app: str, category: str, day: dt.date,
          minutes: int, rating: float = 4.0, installs: int = 1000) -> dict:
    """An event with what the marts read spelled out (the warehouse's types: dates, not text)."""
    return make_event(n, event_id=f"e{n}", user_id=user_id, age=age, location=location, app=app, category=category,
                      download_date=day, minutes_spent=minutes, rating=rating, installs=installs,
                      last_updated=D(2019, 1, 1))


def hand_made() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Batch and stream downloads small enough to count by hand."""
    batch = [
        event(1, 1, 15, "Ohio", "Chess", "GAME", D(2024, 3, 1), 30, rating=4.5, installs=5000),
        event(2, 1, 15, "Ohio", "Chat", "SOCIAL", D(2024, 3, 1), 10),
        event(3, 2, 30, "Texas", "Chess", "GAME", D(2024, 3, 2), 50, rating=4.5, installs=5000),
        event(4, 2, 30, "Texas", "Bank", "FINANCE", D(2024, 3, 2), 20),
        # Outside the 30-day chart window (latest day 2024-03-31 -> window 03-02..03-31).
        event(5, 3, 70, "Ohio", "Go", "GAME", D(2024, 2, 1), 5, rating=5.0, installs=10),
        event(6, 3, 70, "Ohio", "Go", "GAME", D(2024, 2, 1), 5, rating=5.0, installs=10),
    ]
    stream = [
        event(7, 4, 20, "Texas", "Poker", "GAME", D(2024, 3, 2), 40, rating=4.0, installs=100),
        event(8, 5, 20, "Texas", "Puzzle", "GAME", D(2024, 3, 2), 60, rating=4.5, installs=100),
        event(9, 1, 15, "Ohio", "Chess", "GAME", D(2024, 3, 31), 15, rating=4.5, installs=5000),
        event(10, 6, 50, "Ohio", "Racer", "GAME", D(2024, 3, 30), 25, rating=4.0, installs=200),
    ]
    return (coerce_event_frame(pd.DataFrame(batch, columns=list(EVENT_COLUMNS))),
            coerce_event_frame(pd.DataFrame(stream, columns=list(EVENT_COLUMNS))))


def generated(apps: pd.DataFrame, mode: str, *, users: int = 600, days: int = 10, rows: int = 2000) -> pd.DataFrame:
    """`days` days of stream downloads by `users` seeded users (taste or uniform)."""
    people = make_users(users, 100_001, 42, sorted(apps["category"].unique()), "stream")
    return pd.concat([downloads_for_day(apps, people, FIRST_DAY + dt.timedelta(days=d), source="stream",
                                       seed=42, rows=rows, mode=mode) for d in range(days)], ignore_index=True)


def load_warehouse(url: str, batch: pd.DataFrame, stream: pd.DataFrame, *, build_marts: bool = False) -> sa.Engine:
    """A warehouse at `url` holding exactly these download tables (and, on request, the marts built on them)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    create_schema(engine)
    replace_all(engine, "downloads_batch", batch)
    replace_all(engine, "downloads_stream", stream)
    if build_marts:
        marts.build_all_marts(engine)
    return engine
