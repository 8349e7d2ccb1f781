"""Simulated users and downloads: popularity from the catalogue's installs, taste on top, seeded.

On the real Kaggle file (when present) an hour of the stream client's default volume must fill
the dashboard's k = 5 Top 10; on the synthetic catalogue downloads must follow installs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from appdata.analytics import dashboard
from appdata.analytics.privacy import DEFAULT_K
from appdata.sources.catalogue import UNKNOWN_CATEGORY, clean_catalogue, estimated_installs, load_catalogue
from appdata.sources.users import (
    STREAM_FIRST_ID,
    STREAM_USERS,
    downloads_for_day,
    favourite_weights,
    make_users,
    popularity,
)
from appdata_tests.support.analytics import load_warehouse

SEED = 42  # APPDATA_SEED's default, as `appdata up` runs
DAY = dt.date(2025, 6, 2)
EVENTS_PER_MINUTE = 100  # the every-minute stream client (appdata.defs.stream.client_schedule)
HOUR = 60 * EVENTS_PER_MINUTE


def stream_users(apps: pd.DataFrame) -> pd.DataFrame:
    """The stream client's users exactly as the `users_stream` asset makes them."""
    return make_users(STREAM_USERS, STREAM_FIRST_ID, SEED + STREAM_FIRST_ID, sorted(apps["category"].unique()), "stream")


def stream_day(apps: pd.DataFrame, users: pd.DataFrame, day: dt.date = DAY) -> pd.DataFrame:
    """The stream client's file for `day`, as `users_app_stream_client_data` writes it (one row per app)."""
    return downloads_for_day(apps, users, day, source="stream", seed=SEED, rows=len(apps), mode="taste")


def users_per_app(events: pd.DataFrame) -> pd.Series:
    return events.groupby("app")["user_id"].nunique()


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    apps, _ = clean_catalogue(load_catalogue(None, seed=SEED)[0])
    return apps


def test_the_events_client_constant_matches_the_schedule() -> None:
    from appdata.defs.stream.client_schedule import BATCH_PER_MINUTE

    assert BATCH_PER_MINUTE == EVENTS_PER_MINUTE


def test_downloads_follow_installs_on_the_synthetic_catalogue(synthetic: pd.DataFrame) -> None:
    users = stream_users(synthetic)
    events = pd.concat([stream_day(synthetic, users, DAY + dt.timedelta(days=d)) for d in range(10)])
    counts = events["app"].value_counts().reindex(synthetic["app"], fill_value=0).to_numpy()
    per_bucket = pd.Series(counts).groupby(synthetic["installs"].to_numpy()).mean()
    # Over the head (1,000,000+ installs, where installs outweigh the even discovery share) every
    # bigger bucket is downloaded more per app, and about as much more as it is installed
    # (log-log slope ~ 1; the seed's uniform picks gave 0, the former log-squared weight 0.12).
    head = per_bucket[per_bucket.index >= 1_000_000]
    assert stats.spearmanr(head.index, head.to_numpy()).statistic == pytest.approx(1.0)
    slope = np.polyfit(np.log10(head.index.to_numpy(dtype=float)), np.log10(head.to_numpy()), 1)[0]
    assert 0.7 < slope < 1.2, slope
    # ... and across apps the more installed app is the more downloaded one.
    assert stats.spearmanr(estimated_installs(synthetic), counts).statistic > 0.45
    # The long tail is still downloaded: apps under 100,000 installs get a few percent of it all.
    tail = synthetic["installs"].to_numpy() < 100_000
    assert 0.01 < counts[tail].sum() / counts.sum() < 0.05


def test_uniform_mode_still_ignores_installs(synthetic: pd.DataFrame) -> None:
    users = stream_users(synthetic)
    events = downloads_for_day(synthetic, users, DAY, source="stream", seed=SEED, rows=len(synthetic) * 5,
                               mode="uniform")
    counts = events["app"].value_counts().reindex(synthetic["app"], fill_value=0)
    per_bucket = counts.groupby(synthetic["installs"].to_numpy()).mean()
    assert per_bucket.max() / per_bucket.min() < 1.5  # flat: the seed's uniform assignment


def test_popularity_is_a_distribution_with_every_app_in_it(synthetic: pd.DataFrame) -> None:
    weight = popularity(synthetic)
    assert weight.shape == (len(synthetic),) and weight.sum() == pytest.approx(1.0)
    assert (weight > 0).all()  # the even share: no app is out of reach, even with 0 installs
    assert popularity(synthetic.head(0)).shape == (0,)


def test_estimated_installs_stay_in_their_bucket_ordered_by_reviews() -> None:
    apps = pd.DataFrame({"installs": [1_000_000_000, 1_000_000_000, 100_000_000, 100_000_000, 0, 1_000],
                         "reviews": [80_000_000, 1_000, 4_300_000, 900_000_000, 0, 20]})
    estimate = estimated_installs(apps)
    upper = [5_000_000_000, 5_000_000_000, 500_000_000, 500_000_000, 1, 5_000]
    assert ((estimate >= apps["installs"]) & (estimate <= upper)).all()
    assert estimate[0] > estimate[1] == 1_000_000_000  # more reviews, higher in the bucket; none: its floor
    assert estimate[3] == 500_000_000  # never past the next bucket
    assert estimate[4] == 0


def test_the_repaired_unknown_row_is_nobodys_favourite(synthetic: pd.DataFrame) -> None:
    assert UNKNOWN_CATEGORY in set(synthetic["category"])
    users = stream_users(synthetic)
    favourites = set(";".join(users["favourite_categories"]).split(";"))
    assert UNKNOWN_CATEGORY not in favourites
    assert UNKNOWN_CATEGORY not in favourite_weights(sorted(synthetic["category"].unique()))
    hour = stream_day(synthetic, users).head(HOUR)
    unknown = hour[hour["category"] == UNKNOWN_CATEGORY]
    assert len(unknown) <= 2  # its one app is downloaded as its installs say, not by a tenth of the users


def test_popular_categories_have_more_fans_and_age_still_leans(synthetic: pd.DataFrame) -> None:
    users = stream_users(synthetic)
    fans = pd.Series(";".join(users["favourite_categories"]).split(";")).value_counts()
    assert fans["COMMUNICATION"] > 3 * fans["EVENTS"]  # 14.7% of installs against 0.02%
    old = users[users["age"] >= 55]["favourite_categories"].str.contains("NEWS_AND_MAGAZINES").mean()
    young = users[users["age"] < 35]["favourite_categories"].str.contains("NEWS_AND_MAGAZINES").mean()
    assert old > young


def test_downloads_are_seeded(synthetic: pd.DataFrame) -> None:
    users = stream_users(synthetic)
    first = stream_day(synthetic, users)
    pd.testing.assert_frame_equal(first, stream_day(synthetic, stream_users(synthetic)))
    assert not first["app"].equals(stream_day(synthetic, users, DAY + dt.timedelta(days=1))["app"])


# -- the real catalogue ----------------------------------------------------------------------------
@pytest.fixture()
def real_apps(real_catalogue: Path) -> pd.DataFrame:
    """The real Kaggle file cleaned (conftest's `real_catalogue`: APPDATA_PLAYSTORE_CSV, else
    ../shared/data/googleplaystore.csv; skipped naming both when neither exists; marks `realdata`)."""
    apps, _ = clean_catalogue(load_catalogue(str(real_catalogue))[0])
    return apps


def test_an_hour_of_the_stream_fills_the_k5_top_ten_on_the_real_catalogue(real_apps: pd.DataFrame,
                                                                           duckdb_url: str) -> None:
    """6,000 events (an hour of `appdata up`'s every-minute client), through the marts and the
    dashboard's own suppression: ten apps in the Top 10, none of them the repaired UNKNOWN row."""
    users = stream_users(real_apps)
    hour = stream_day(real_apps, users).head(HOUR)
    assert len(hour) == HOUR
    assert (users_per_app(hour) >= DEFAULT_K).sum() >= 100  # measured: 227 to 254 over 30 days
    engine = load_warehouse(duckdb_url, hour.head(0), hour, build_marts=True)
    try:
        view = dashboard.overview(engine, dashboard.Filters())
        top = view["sections"]["top_apps"]
        assert len(top["rows"]) == dashboard.TOP_APPS, top
        categories = dict(zip(real_apps["app"], real_apps["category"]))
        assert all(categories[row[0]] != UNKNOWN_CATEGORY for row in top["rows"])
        assert {"Facebook", "WhatsApp Messenger", "Instagram"} <= {row[0] for row in top["rows"]}
        assert dashboard.app_profile(engine, "Pinterest", dashboard.Filters()) is not None
    finally:
        engine.dispose()


def test_popular_apps_reach_k_users_within_an_hour_on_most_days(real_apps: pd.DataFrame) -> None:
    """Pinterest (100,000,000+ installs, 0.2% of all) after an hour, over ten days of the seeded
    client: its page has data on nearly every day (measured: 57 of 60), always by the day's end."""
    users = stream_users(real_apps)
    days = [stream_day(real_apps, users, DAY + dt.timedelta(days=d)) for d in range(10)]
    after_an_hour = [int(users_per_app(day.head(HOUR)).get("Pinterest", 0)) for day in days]
    whole_day = [int(users_per_app(day).get("Pinterest", 0)) for day in days]
    assert sum(n >= DEFAULT_K for n in after_an_hour) >= 8, after_an_hour
    assert min(whole_day) >= DEFAULT_K, whole_day
