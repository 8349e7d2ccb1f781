"""Fake users (Faker, seeded) and the client datasets: catalogue rows joined with users and dates.

The seed spread users uniformly at random over the catalogue, which leaves nothing to analyse
or recommend. By default ("taste") each user has a few favourite categories drawn from an
age-dependent mix, so downloads have structure; APPDATA_USER_PREFERENCES=uniform reproduces the
seed's uniform assignment.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from faker import Faker

from appdata.contract.schema import EVENT_COLUMNS, client_event_ids

BATCH_USERS = 200
STREAM_USERS = 1_000
BATCH_FIRST_ID = 1
STREAM_FIRST_ID = 100_001
PREFERENCE_MODES = ("taste", "uniform")

# Which categories each age band leans to (weights added to the catalogue's own mix).
AGE_BANDS = ((13, 17, "13-17"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"),
             (45, 54, "45-54"), (55, 64, "55-64"), (65, 120, "65+"))
_AGE_TASTE = {
    "13-17": ("GAME", "SOCIAL", "ENTERTAINMENT", "VIDEO_PLAYERS", "COMICS", "PHOTOGRAPHY"),
    "18-24": ("GAME", "SOCIAL", "DATING", "PHOTOGRAPHY", "VIDEO_PLAYERS", "COMMUNICATION"),
    "25-34": ("DATING", "FINANCE", "TRAVEL_AND_LOCAL", "HEALTH_AND_FITNESS", "SHOPPING", "PRODUCTIVITY"),
    "35-44": ("BUSINESS", "PRODUCTIVITY", "FINANCE", "PARENTING", "SHOPPING", "FOOD_AND_DRINK"),
    "45-54": ("NEWS_AND_MAGAZINES", "BUSINESS", "HOUSE_AND_HOME", "TOOLS", "FINANCE", "WEATHER"),
    "55-64": ("NEWS_AND_MAGAZINES", "HEALTH_AND_FITNESS", "MEDICAL", "WEATHER", "BOOKS_AND_REFERENCE"),
    "65+": ("MEDICAL", "NEWS_AND_MAGAZINES", "WEATHER", "BOOKS_AND_REFERENCE", "HEALTH_AND_FITNESS"),
}


def age_band(age: int) -> str:
    for low, high, label in AGE_BANDS:
        if low <= age <= high:
            return label
    return "65+"


def make_users(count: int, first_id: int, seed: int, categories: list[str], client: str) -> pd.DataFrame:
    """`count` users with id, name, location (US state), age, minutes habit and favourite categories."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = np.random.default_rng(seed)
    ages = np.clip(rng.gamma(shape=6.0, scale=6.0, size=count) + 13, 13, 90).astype(int)
    rows = []
    for offset in range(count):
        age = int(ages[offset])
        band = age_band(age)
        leaning = [c for c in _AGE_TASTE[band] if c in categories] or categories
        pool = list(dict.fromkeys(leaning + categories))
        weights = np.array([4.0 if c in leaning else 1.0 for c in pool])
        favourites = rng.choice(pool, size=min(3, len(pool)), replace=False, p=weights / weights.sum())
        rows.append(
            {
                "user_id": first_id + offset,
                "name": fake.name(),
                "location": fake.state(),
                "age": age,
                "minutes_habit": int(rng.integers(5, 90)),
                "favourite_categories": ";".join(favourites),
                "client": client,
            }
        )
    return pd.DataFrame(rows)


def _pick_apps(
    rng: np.random.Generator, apps: pd.DataFrame, users: pd.DataFrame, user_index: np.ndarray, mode: str
) -> np.ndarray:
    """Index into `apps` for each download, uniform (the seed) or by each user's taste."""
    n = len(user_index)
    if mode == "uniform":
        return rng.integers(0, len(apps), size=n)
    popularity = np.log10(apps["installs"].to_numpy(dtype="float64") + 10.0) ** 2
    chosen = rng.choice(len(apps), size=n, p=popularity / popularity.sum())
    favourite = rng.random(n) < 0.75
    favourites = np.array(users["favourite_categories"].str.split(";").tolist(), dtype=object)
    by_category = {cat: idx for cat, idx in apps.groupby("category").indices.items()}
    picks = favourites[user_index, rng.integers(0, favourites.shape[1], size=n)]
    for category in np.unique(picks[favourite]):
        rows = np.flatnonzero(favourite & (picks == category))
        candidates = by_category.get(category)
        if candidates is None or len(candidates) == 0:
            continue
        weight = popularity[candidates]
        chosen[rows] = rng.choice(candidates, size=len(rows), p=weight / weight.sum())
    return chosen


def _join(apps: pd.DataFrame, users: pd.DataFrame, app_index: np.ndarray, user_index: np.ndarray,
          minutes: np.ndarray, day: dt.date, event_ids: list[str]) -> pd.DataFrame:
    picked_apps = apps.iloc[app_index].reset_index(drop=True)
    picked_users = users.iloc[user_index].reset_index(drop=True)
    frame = pd.concat([picked_users[["user_id", "name", "location", "age"]], picked_apps], axis=1)
    frame["minutes_spent"] = minutes.astype("int64")
    frame["download_date"] = day
    frame["event_id"] = event_ids
    return frame[list(EVENT_COLUMNS)]


def downloads_for_day(
    apps: pd.DataFrame,
    users: pd.DataFrame,
    day: dt.date,
    *,
    source: str,
    seed: int,
    rows: int | None = None,
    mode: str = "taste",
) -> pd.DataFrame:
    """One day's downloads: deterministic for (source, seed, day, rows, mode).

    By default a day has about len(apps)/366 downloads (Poisson), so a year holds roughly one
    download per catalogue row, as in the seed; `rows` overrides it (the scale knob).
    """
    if mode not in PREFERENCE_MODES:
        raise ValueError(f"preference mode must be one of {PREFERENCE_MODES}, got {mode!r}")
    rng = np.random.default_rng([seed, day.toordinal(), 0 if source == "batch" else 1])
    count = int(rows) if rows is not None else int(rng.poisson(max(len(apps) / 366.0, 1.0)))
    user_index = rng.integers(0, len(users), size=count)
    app_index = _pick_apps(rng, apps, users, user_index, mode)
    habit = users["minutes_habit"].to_numpy()[user_index]
    minutes = np.clip(rng.gamma(2.0, habit / 2.0), 1, 600).round()
    event_ids = client_event_ids(source, seed, day.isoformat(), count)
    return _join(apps, users, app_index, user_index, minutes, day, event_ids)
