"""Fake users (Faker, seeded) and the client datasets: catalogue rows joined with users and dates.

The seed spread downloads uniformly at random over the catalogue, and the first taste mode weighed
apps by log10(installs)^2, nearly as flat: with 9,660 apps and the stream client's 6,000 events an
hour, almost no app reached the dashboard's 5 users for most of that hour. Downloads now follow
each app's popularity in the catalogue (`popularity`: its installs, placed inside their bucket by
reviews, plus a small even share so the long tail is still downloaded). By default
("taste") each user also has three favourite categories, drawn from an age-dependent mix weighted
by how much of the Play Store's installs each category holds, and about 75% of their downloads fall
in them; APPDATA_USER_PREFERENCES=uniform reproduces the seed's uniform assignment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from faker import Faker

from appdata.contract.schema import EVENT_COLUMNS, client_event_ids
from appdata.sources.catalogue import UNKNOWN_CATEGORY, estimated_installs

BATCH_USERS = 200
STREAM_USERS = 1_000
BATCH_FIRST_ID = 1
STREAM_FIRST_ID = 100_001
PREFERENCE_MODES = ("taste", "uniform")

# How an app's popularity weight follows its (estimated) installs, and the share of downloads
# spread evenly over the whole catalogue (see `popularity`).
POPULARITY_EXPONENT = 1.0
DISCOVERY_SHARE = 0.05
FAVOURITE_SHARE = 0.75  # of a taste user's downloads, in their favourite categories
FAVOURITES = 3
AGE_LEANING = 4.0  # how much more likely a category of the user's age band is to be a favourite
CATEGORY_POPULARITY_EXPONENT = 0.5  # favourites follow the category's share of installs, damped

# Which categories each age band leans to (each AGE_LEANING times as likely to be a favourite).
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
# Each category's share of all installs (percent) in the Kaggle catalogue (2018, one row per app):
# how many people a category has, so how likely it is to be someone's favourite. A catalogue's own
# categories missing here weigh as the median one.
CATEGORY_INSTALLS_PCT = {
    "GAME": 17.867, "COMMUNICATION": 14.655, "TOOLS": 10.757, "FAMILY": 8.26, "PRODUCTIVITY": 7.691,
    "SOCIAL": 7.286, "PHOTOGRAPHY": 6.184, "VIDEO_PLAYERS": 5.22, "TRAVEL_AND_LOCAL": 3.843,
    "NEWS_AND_MAGAZINES": 3.145, "BOOKS_AND_REFERENCE": 2.212, "PERSONALIZATION": 2.035, "SHOPPING": 1.859,
    "HEALTH_AND_FITNESS": 1.519, "SPORTS": 1.456, "ENTERTAINMENT": 1.314, "BUSINESS": 0.926,
    "LIFESTYLE": 0.669, "MAPS_AND_NAVIGATION": 0.668, "FINANCE": 0.605, "WEATHER": 0.479,
    "FOOD_AND_DRINK": 0.281, "EDUCATION": 0.252, "DATING": 0.187, "ART_AND_DESIGN": 0.15,
    "HOUSE_AND_HOME": 0.129, "AUTO_AND_VEHICLES": 0.071, "LIBRARIES_AND_DEMO": 0.07, "COMICS": 0.06,
    "MEDICAL": 0.051, "PARENTING": 0.042, "BEAUTY": 0.036, "EVENTS": 0.021,
}


def age_band(age: int) -> str:
    for low, high, label in AGE_BANDS:
        if low <= age <= high:
            return label
    return "65+"


def favourite_weights(categories: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """How likely each category is to be a favourite before the age leaning: its share of installs
    (`categories` as a mapping, else CATEGORY_INSTALLS_PCT) to CATEGORY_POPULARITY_EXPONENT.

    The catalogue's UNKNOWN category (the one repaired row whose Category was missing) is nobody's
    favourite: a user with it would put a quarter of their downloads on that single app.
    """
    shares = dict(categories) if isinstance(categories, Mapping) else {
        c: CATEGORY_INSTALLS_PCT.get(c, np.nan) for c in categories}
    shares = {c: v for c, v in shares.items() if c != UNKNOWN_CATEGORY}
    known = [v for v in shares.values() if v == v and v > 0]
    fallback = float(np.median(known)) if known else 1.0
    return {c: (v if v == v and v > 0 else fallback) ** CATEGORY_POPULARITY_EXPONENT for c, v in shares.items()}


def make_users(count: int, first_id: int, seed: int, categories: Sequence[str] | Mapping[str, float],
               client: str) -> pd.DataFrame:
    """`count` users with id, name, location (US state), age, minutes habit and favourite categories.

    `categories`: the catalogue's categories, or a mapping of each to its share of installs (see
    `favourite_weights`); a category of the user's age band is AGE_LEANING times as likely.
    """
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = np.random.default_rng(seed)
    ages = np.clip(rng.gamma(shape=6.0, scale=6.0, size=count) + 13, 13, 90).astype(int)
    base = favourite_weights(categories)
    names = sorted(base) or [UNKNOWN_CATEGORY]
    rows = []
    for offset in range(count):
        age = int(ages[offset])
        band = age_band(age)
        leaning = [c for c in _AGE_TASTE[band] if c in base] or names
        pool = list(dict.fromkeys(leaning + names))
        weights = np.array([base.get(c, 1.0) * (AGE_LEANING if c in leaning else 1.0) for c in pool])
        favourites = rng.choice(pool, size=min(FAVOURITES, len(pool)), replace=False, p=weights / weights.sum())
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


def popularity(apps: pd.DataFrame) -> np.ndarray:
    """Each app's probability of being the next download, before taste (sums to 1).

    (1 - DISCOVERY_SHARE) of downloads follow the catalogue's installs, placed inside their
    bucket by reviews (catalogue.estimated_installs), to POPULARITY_EXPONENT (1: proportional);
    DISCOVERY_SHARE are spread evenly over the catalogue (search, browsing, a friend's tip).

    Why (figures on the real file, with the stream client's 6,000 events an hour): installs are
    accumulated downloads, so proportional weights give the head its real weight. The apps of
    100,000,000+ installs hold 70% of the (estimated) installs; Facebook, WhatsApp, Instagram
    and Messenger lead the hour, and Pinterest (0.2%) gets about 9 downloads: its page has 5
    users after an hour on 57 of 60 days measured, and on all 60 once the day's 9,660 are sent.
    Proportional alone would starve the tail: the 48% of apps under 100,000 installs hold 0.04%
    of the installs, 4 of the batch client's 9,660 downloads a year. The even share gives them
    2.4% of all downloads (about 240 a year) instead: any app can turn up, none enters the
    charts by it. The damped power installs ** 0.5 was the other candidate: it feeds the tail
    about as much (2.2%) but flattens the head, so after 1,000 events (the first quarter hour)
    9 apps have 5 users instead of 41, and Pinterest has 5 users after an hour on 23 days of 30.
    """
    if apps.empty:
        return np.zeros(0)
    weight = (estimated_installs(apps) + 1.0) ** POPULARITY_EXPONENT
    return (1.0 - DISCOVERY_SHARE) * weight / weight.sum() + DISCOVERY_SHARE / len(apps)


def _pick_apps(
    rng: np.random.Generator, apps: pd.DataFrame, users: pd.DataFrame, user_index: np.ndarray, mode: str
) -> np.ndarray:
    """Index into `apps` for each download: uniform (the seed), or by popularity and taste.

    Taste: FAVOURITE_SHARE of the downloads fall in the user's favourite categories, the category
    picked in proportion to its apps' popularity (a SOCIAL fan who also likes EVENTS downloads
    far more SOCIAL apps) and the app within it by popularity; the rest follow popularity alone.
    """
    n = len(user_index)
    if mode == "uniform":
        return rng.integers(0, len(apps), size=n)
    weight = popularity(apps)
    chosen = rng.choice(len(apps), size=n, p=weight)
    codes, names = pd.factorize(apps["category"], sort=True)
    mass = np.bincount(codes[codes >= 0], weights=weight[codes >= 0], minlength=len(names))
    favourites = users["favourite_categories"].fillna("").str.split(";").tolist()
    width = max((len(f) for f in favourites), default=0)
    if width == 0 or len(names) == 0:
        return chosen
    code_of = {name: code for code, name in enumerate(names)}
    table = np.array([[code_of.get(c, -1) for c in f] + [-1] * (width - len(f)) for f in favourites])[user_index]
    masses = np.where(table >= 0, mass[np.maximum(table, 0)], 0.0)
    totals = masses.sum(axis=1)
    favourite = (rng.random(n) < FAVOURITE_SHARE) & (totals > 0)
    cumulative = np.cumsum(masses, axis=1) / np.where(totals > 0, totals, 1.0)[:, None]
    column = np.minimum((cumulative < rng.random(n)[:, None]).sum(axis=1), width - 1)
    picks = table[np.arange(n), column]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    for code in np.unique(picks[favourite]):
        rows = np.flatnonzero(favourite & (picks == code))
        candidates = order[bounds[code]:bounds[code + 1]]
        chosen[rows] = rng.choice(candidates, size=len(rows), p=weight[candidates] / weight[candidates].sum())
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
