"""The Google Play Store catalogue: reading it, a synthetic stand-in, and its cleaning rules.

The real Kaggle file (lava18/google-play-store-apps) is dirty in known ways: exact duplicate
rows, "NaN" ratings, one row shifted left by a missing Category, sizes like "19M"/"201k"/
"Varies with device", installs like "10,000+", prices like "$4.99", dates like "January 7, 2018".
`clean_catalogue` applies explicit rules and counts each one, so a user can see what was done.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from appdata.contract import schema

RAW_COLUMNS = (
    "App", "Category", "Rating", "Reviews", "Size", "Installs", "Type", "Price",
    "Content Rating", "Genres", "Last Updated", "Current Ver", "Android Ver",
)
CLEAN_COLUMNS = (
    "app", "category", "rating", "reviews", "size_mb", "installs", "type", "price",
    "content_rating", "genres", "last_updated", "current_ver", "android_ver",
)
UNKNOWN = "Unknown"
UNKNOWN_CATEGORY = "UNKNOWN"
_CATEGORY_RE = re.compile(r"^[A-Z][A-Z_]*$")
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([MmKk])\s*$")
NULLS = {"", "nan", "NaN", "NAN", "null", "None"}


class CatalogueError(ValueError):
    """The file cannot be read as a catalogue at all (wrong header, not UTF-8, empty)."""


def read_raw_catalogue(path: str | Path) -> pd.DataFrame:
    """Read a catalogue CSV as text, one list per line, keeping short and long rows as they are.

    Returns a frame with the 13 raw columns plus `_line` (1-based line in the file) and
    `_fields` (how many fields the line had), so the cleaning can see shifted rows.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from exc
    return parse_raw_catalogue(text, source=str(path))


def parse_raw_catalogue(text: str, source: str = "<text>") -> pd.DataFrame:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise CatalogueError(f"{source}: empty file, expected a header with {', '.join(RAW_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    if tuple(header) != RAW_COLUMNS:
        missing = [c for c in RAW_COLUMNS if c not in header]
        raise CatalogueError(
            f"{source}: header does not match the Play Store catalogue; "
            f"missing {missing or 'none'}, got {header}"
        )
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        padded = (row + [None] * len(RAW_COLUMNS))[: len(RAW_COLUMNS)]
        records.append([*padded, number, len(row)])
    frame = pd.DataFrame(records, columns=[*RAW_COLUMNS, "_line", "_fields"], dtype=object)
    frame["_line"] = frame["_line"].astype("int64")
    frame["_fields"] = frame["_fields"].astype("int64")
    return frame


@dataclass
class CleaningReport:
    """Counts of every rule applied, in the order applied."""

    rows_read: int = 0
    exact_duplicates_dropped: int = 0
    shifted_rows_repaired: int = 0
    rows_quarantined: int = 0
    duplicate_app_rows_dropped: int = 0
    ratings_filled_with_median: int = 0
    rating_median: float = float("nan")
    sizes_varying_with_device: int = 0
    types_inferred_from_price: int = 0
    versions_filled_unknown: int = 0
    null_ratings_after_fill: int = 0
    apps_out: int = 0
    quarantined: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)

    RULES = (
        "exact duplicate rows are dropped (the first is kept)",
        "a row shifted left by one field (Category missing, 12 fields) is repaired by shifting "
        "it right; its Category becomes UNKNOWN and an empty Genres becomes Unknown",
        "rows that still fail typing (other field counts, unparseable numbers or dates, rating "
        "outside 1-5) are quarantined with the reason",
        "one row per App name: the one with the most reviews (the latest scrape), then the most "
        "recent Last Updated, then the first in the file",
        "NaN ratings are filled with the median rating of the apps kept (as the seed does)",
        "Size becomes size_mb: 19M -> 19.0, 201k -> 0.196, 'Varies with device' -> null",
        "Installs '10,000+' -> 10000; Reviews as integers; Price '$4.99' -> 4.99",
        "a missing Type is inferred from Price (0 -> Free, otherwise Paid)",
        "missing Current Ver / Android Ver become 'Unknown'",
        "Last Updated 'January 7, 2018' -> 2018-01-07",
    )

    def as_dict(self, *, with_rows: bool = True) -> dict:
        out = {k: v for k, v in self.__dict__.items() if with_rows or k not in ("quarantined", "repaired")}
        out["rating_median"] = None if np.isnan(self.rating_median) else round(float(self.rating_median), 3)
        out["rules"] = list(self.RULES)
        return out


def _null(series: pd.Series) -> pd.Series:
    return series.isna() | series.astype("string").str.strip().isin(NULLS).fillna(True)


def _repair_shifted(raw: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    """Shift 12-field rows whose Category is missing back into place."""
    frame = raw.copy()
    category_bad = ~frame["Category"].astype("string").str.match(_CATEGORY_RE).fillna(False)
    shifted = (frame["_fields"] == len(RAW_COLUMNS) - 1) & category_bad
    for index in frame.index[shifted]:
        values = frame.loc[index, list(RAW_COLUMNS)].tolist()
        repaired = [values[0], UNKNOWN_CATEGORY, *values[1:-1]]
        if repaired[RAW_COLUMNS.index("Genres")] in (None, ""):
            repaired[RAW_COLUMNS.index("Genres")] = UNKNOWN
        frame.loc[index, list(RAW_COLUMNS)] = repaired
        frame.loc[index, "_fields"] = len(RAW_COLUMNS)
        report.shifted_rows_repaired += 1
        report.repaired.append(
            {"line": int(frame.loc[index, "_line"]), "app": values[0],
             "reason": "shifted left by one field (Category missing): shifted right, Category=UNKNOWN"}
        )
    return frame


def _parse_size(series: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    text = series.astype("string").str.strip()
    varies = text.str.lower().eq("varies with device").fillna(False)
    parts = text.str.extract(_SIZE_RE)
    number = pd.to_numeric(parts[0].astype(object), errors="coerce").astype("float64")
    unit = parts[1].str.upper()
    size_mb = (number.where(unit == "M", number / 1024)).astype("float64")
    bad = ~varies & size_mb.isna()
    return size_mb.where(~varies), varies, bad


def clean_catalogue(raw: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Apply the cleaning rules to a raw catalogue frame; return (apps, report)."""
    report = CleaningReport(rows_read=len(raw))
    frame = raw.drop_duplicates(subset=list(RAW_COLUMNS), keep="first")
    report.exact_duplicates_dropped = len(raw) - len(frame)
    frame = _repair_shifted(frame, report)

    reasons = pd.Series("", index=frame.index, dtype=object)

    def flag(mask: pd.Series, reason: str) -> None:
        mask = mask.fillna(False).astype(bool)
        reasons[mask & (reasons == "")] = reason

    flag(frame["_fields"] != len(RAW_COLUMNS), "wrong number of fields")
    flag(_null(frame["App"]), "App: is empty")
    flag(~frame["Category"].astype("string").str.match(_CATEGORY_RE), "Category: not an upper-case category")
    # the event contract's closed domains: an app outside them could never be downloaded
    flag(~frame["Category"].astype("string").isin(schema.CATEGORIES), "Category: not a category of the event contract")
    flag(~frame["Content Rating"].astype("string").str.strip().isin(schema.CONTENT_RATINGS),
         "Content Rating: not a rating of the event contract")

    rating_null = _null(frame["Rating"])
    rating = pd.to_numeric(frame["Rating"].where(~rating_null), errors="coerce")
    flag(~rating_null & (rating.isna() | (rating < 1) | (rating > 5)), "Rating: not a number in 1-5")

    reviews = pd.to_numeric(frame["Reviews"].astype("string").str.strip(), errors="coerce")
    flag(reviews.isna() | (reviews < 0) | (reviews % 1 != 0), "Reviews: not a whole number")

    size_mb, varies, size_bad = _parse_size(frame["Size"])
    flag(size_bad, "Size: not like 19M, 201k or 'Varies with device'")

    installs_text = frame["Installs"].astype("string").str.strip().str.replace(r"[,+]", "", regex=True)
    installs = pd.to_numeric(installs_text, errors="coerce")
    flag(installs.isna() | (installs < 0), "Installs: not like 10,000+")

    price = pd.to_numeric(frame["Price"].astype("string").str.strip().str.lstrip("$"), errors="coerce")
    flag(price.isna() | (price < 0), "Price: not like 0 or $4.99")

    last_updated = pd.to_datetime(frame["Last Updated"].astype("string").str.strip(), format="%B %d, %Y", errors="coerce")
    flag(last_updated.isna(), "Last Updated: not like 'January 7, 2018'")

    type_null = _null(frame["Type"])
    type_text = frame["Type"].astype("string").str.strip()
    flag(~type_null & ~type_text.isin(["Free", "Paid"]), "Type: not Free or Paid")

    bad = reasons != ""
    for index in frame.index[bad]:
        report.quarantined.append(
            {"line": int(frame.loc[index, "_line"]), "app": frame.loc[index, "App"], "reason": reasons[index]}
        )
    report.rows_quarantined = int(bad.sum())

    good = ~bad
    typed = pd.DataFrame(
        {
            "app": frame["App"].astype("string").str.strip(),
            "category": frame["Category"].astype("string").str.strip(),
            "rating": rating.astype("float64"),
            "reviews": reviews,
            "size_mb": size_mb,
            "installs": installs,
            "type": type_text.where(~type_null),
            "price": price.astype("float64"),
            "content_rating": frame["Content Rating"].astype("string").str.strip(),
            "genres": frame["Genres"].astype("string").str.strip(),
            "last_updated": last_updated,
            "current_ver": frame["Current Ver"].astype("string").str.strip().where(~_null(frame["Current Ver"])),
            "android_ver": frame["Android Ver"].astype("string").str.strip().where(~_null(frame["Android Ver"])),
            "_line": frame["_line"],
            "_varies": varies,
        }
    )[good]

    # One row per App: most reviews, then latest update, then first in the file.
    ordered = typed.sort_values(["app", "reviews", "last_updated", "_line"], ascending=[True, False, False, True], kind="stable")
    apps = ordered.drop_duplicates(subset=["app"], keep="first")
    report.duplicate_app_rows_dropped = len(typed) - len(apps)

    median = float(apps["rating"].median())
    report.rating_median = median
    report.ratings_filled_with_median = int(apps["rating"].isna().sum())
    apps = apps.assign(rating=apps["rating"].fillna(median))

    report.sizes_varying_with_device = int(apps["_varies"].sum())
    missing_type = apps["type"].isna()
    report.types_inferred_from_price = int(missing_type.sum())
    apps.loc[missing_type, "type"] = np.where(apps.loc[missing_type, "price"] > 0, "Paid", "Free")
    missing_versions = apps["current_ver"].isna() | apps["android_ver"].isna()
    report.versions_filled_unknown = int(missing_versions.sum())
    apps = apps.assign(
        current_ver=apps["current_ver"].fillna(UNKNOWN),
        android_ver=apps["android_ver"].fillna(UNKNOWN),
    )

    apps = apps.sort_values("_line").reset_index(drop=True)
    out = pd.DataFrame(
        {
            "app": apps["app"].astype(object),
            "category": apps["category"].astype(object),
            "rating": apps["rating"].astype("float64"),
            "reviews": apps["reviews"].astype("int64"),
            "size_mb": apps["size_mb"].astype("float64"),
            "installs": apps["installs"].astype("int64"),
            "type": apps["type"].astype(object),
            "price": apps["price"].astype("float64"),
            "content_rating": apps["content_rating"].astype(object),
            "genres": apps["genres"].astype(object),
            "last_updated": apps["last_updated"].dt.date,
            "current_ver": apps["current_ver"].astype(object),
            "android_ver": apps["android_ver"].astype(object),
        }
    )
    report.null_ratings_after_fill = int(out["rating"].isna().sum())
    report.apps_out = len(out)
    return out, report


# --- a synthetic catalogue with the real one's shape and dirt -------------------------------

CATEGORIES = {
    "FAMILY": 0.18, "GAME": 0.11, "TOOLS": 0.08, "MEDICAL": 0.04, "BUSINESS": 0.04,
    "PRODUCTIVITY": 0.04, "PERSONALIZATION": 0.04, "COMMUNICATION": 0.035, "SPORTS": 0.035,
    "LIFESTYLE": 0.035, "FINANCE": 0.035, "HEALTH_AND_FITNESS": 0.03, "PHOTOGRAPHY": 0.03,
    "SOCIAL": 0.027, "NEWS_AND_MAGAZINES": 0.026, "SHOPPING": 0.024, "TRAVEL_AND_LOCAL": 0.024,
    "DATING": 0.022, "BOOKS_AND_REFERENCE": 0.021, "VIDEO_PLAYERS": 0.016, "EDUCATION": 0.015,
    "ENTERTAINMENT": 0.014, "MAPS_AND_NAVIGATION": 0.013, "FOOD_AND_DRINK": 0.012,
    "HOUSE_AND_HOME": 0.008, "AUTO_AND_VEHICLES": 0.008, "LIBRARIES_AND_DEMO": 0.008,
    "WEATHER": 0.008, "ART_AND_DESIGN": 0.006, "EVENTS": 0.006, "PARENTING": 0.006,
    "COMICS": 0.006, "BEAUTY": 0.005,
}
_WORDS_A = ("Super", "Smart", "Easy", "Pocket", "Daily", "Magic", "Happy", "Pro", "Quick", "Total",
            "Mega", "Tiny", "Bright", "Cool", "Free", "Simple", "Ultimate", "Royal", "Wild", "Zen")
_WORDS_B = ("Photo", "Budget", "Puzzle", "Chat", "Weather", "Fitness", "Recipe", "Music", "Video",
            "Map", "News", "Book", "Camera", "Keyboard", "Launcher", "Dating", "Shop", "Travel",
            "Quiz", "Run", "Sleep", "Note", "Draw", "Learn", "Drive", "Home", "Garden", "Pet")
_WORDS_C = ("Editor", "Tracker", "Manager", "Master", "Studio", "Lite", "Plus", "Guide", "Hero",
            "Saga", "World", "Maker", "Helper", "Planner", "Scanner", "Player", "Radio", "Club")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_INSTALL_STEPS = (1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000,
                  1_000_000, 5_000_000, 10_000_000, 50_000_000, 100_000_000, 500_000_000, 1_000_000_000)
_CONTENT = ("Everyone", "Teen", "Mature 17+", "Everyone 10+", "Adults only 18+", "Unrated")


def synthetic_catalogue_csv(n_apps: int = 9_300, seed: int = 7) -> str:
    """A deterministic catalogue CSV of about 10,000 rows, dirty in the real file's ways.

    It has ~9,300 distinct apps, some re-scraped with other review counts (several rows per
    App), ~4.5% exact duplicate rows, ~13.5% "NaN" ratings, one row shifted left by a missing
    Category, one missing Type, "Varies with device" sizes, "$4.99" prices, "10,000+" installs
    and "January 7, 2018" dates.
    """
    rng = np.random.default_rng(seed)
    categories = list(CATEGORIES)
    weights = np.array(list(CATEGORIES.values()))
    weights = weights / weights.sum()
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n_apps:
        name = f"{rng.choice(_WORDS_A)} {rng.choice(_WORDS_B)} {rng.choice(_WORDS_C)}"
        if name in seen:
            name = f"{name} {int(rng.integers(2, 1000))}"
        if name not in seen:
            seen.add(name)
            names.append(name)

    rows: list[list[str]] = []
    for name in names:
        category = categories[rng.choice(len(categories), p=weights)]
        step = int(rng.choice(len(_INSTALL_STEPS), p=_install_weights()))
        installs = _INSTALL_STEPS[step]
        reviews = int(installs * rng.uniform(0.001, 0.08))
        rating = "NaN" if rng.random() < 0.12 or reviews == 0 else f"{np.clip(rng.normal(4.2, 0.45), 1, 5):.1f}"
        size = "Varies with device" if rng.random() < 0.15 else (
            f"{int(rng.integers(8, 999))}k" if rng.random() < 0.05 else f"{rng.uniform(1, 100):.1f}M".replace(".0M", "M"))
        paid = rng.random() < 0.07
        price = f"${rng.choice([0.99, 1.99, 2.99, 3.99, 4.99, 9.99])}" if paid else "0"
        year = int(rng.choice([2013, 2014, 2015, 2016, 2017, 2018, 2018, 2018, 2018]))
        month = int(rng.integers(1, 9 if year == 2018 else 13))
        day = int(rng.integers(1, 29))
        current = "Varies with device" if size == "Varies with device" else f"{int(rng.integers(1, 9))}.{int(rng.integers(0, 20))}.{int(rng.integers(0, 30))}"
        android = "Varies with device" if current == "Varies with device" else f"{rng.choice(['4.0.3', '4.1', '4.4', '5.0'])} and up"
        genre = category.replace("_AND_", " & ").replace("_", " ").title()
        rows.append([name, category, rating, str(reviews), size, f"{installs:,}+", "Paid" if paid else "Free",
                     price, str(rng.choice(_CONTENT, p=[0.8, 0.11, 0.045, 0.04, 0.003, 0.002])), genre,
                     f"{_MONTHS[month - 1]} {day}, {year}", current, android])

    # Re-scrapes: the same App again with more reviews (the cleaning keeps the most reviewed).
    for index in rng.choice(len(rows), size=int(n_apps * 0.035), replace=False):
        again = list(rows[index])
        again[3] = str(int(again[3]) + int(rng.integers(1, 500)))
        rows.append(again)
    # Exact duplicates, as the Kaggle scrape has them.
    for index in rng.choice(len(rows), size=int(len(rows) * 0.047), replace=False):
        rows.append(list(rows[index]))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    # One missing Type and missing versions, as in the real file.
    rows[17][6] = "NaN"
    rows[17][7] = "0"
    rows[23][11] = "NaN"
    # One row shifted left by one field: Category missing, Genres empty.
    shifted_at = len(rows) // 2
    victim = rows[shifted_at]
    victim[9] = ""
    rows[shifted_at] = [victim[0], *victim[2:]]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RAW_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


# --- how popular each app is -----------------------------------------------------------------

# The Installs column is a bucket's lower bound ("100,000,000+"): 20 apps of the real file tie at
# 1,000,000,000+ and 189 at 100,000,000+. The next bucket bounds it from above.
INSTALL_BUCKETS = (0, *_INSTALL_STEPS)
REVIEWS_RATIO_MIN_INSTALLS = 1_000  # apps this big enough to say how many installs a review stands for
DEFAULT_REVIEWS_PER_INSTALL = 0.02  # the real file's median (0.017) when a catalogue has no such app


def estimated_installs(apps: pd.DataFrame) -> np.ndarray:
    """Each app's installs placed inside its Installs bucket by its reviews, as float64.

    Reviews track installs (their median ratio over apps of 1,000 installs or more is 0.017 on
    the real file, 0.040 on the synthetic one), so `reviews / ratio` says where in
    [Installs, next bucket) an app lies: Facebook (78M reviews) comes out at the top of
    1,000,000,000+, Google Play Books (1.4M) at its floor, Pinterest (4.3M) at 2.2e8 in
    100,000,000+. The estimate never leaves the bucket, so the order of the buckets (the
    Installs column) is kept; an app without reviews stays at its bucket's floor.
    """
    installs = apps["installs"].to_numpy(dtype="float64")
    reviews = apps["reviews"].to_numpy(dtype="float64")
    steps = np.array(INSTALL_BUCKETS, dtype="float64")
    above = np.searchsorted(steps, installs, side="right")
    upper = np.where(above < len(steps), steps[np.minimum(above, len(steps) - 1)], installs * 5.0)
    sized = installs >= REVIEWS_RATIO_MIN_INSTALLS
    ratio = float(np.median(reviews[sized] / installs[sized])) if sized.any() else DEFAULT_REVIEWS_PER_INSTALL
    if not ratio > 0:
        ratio = DEFAULT_REVIEWS_PER_INSTALL
    return np.clip(reviews / ratio, installs, upper)


def _install_weights() -> np.ndarray:
    weights = np.array([0.01, 0.01, 0.02, 0.02, 0.06, 0.03, 0.08, 0.04, 0.1, 0.05, 0.12, 0.05,
                        0.15, 0.07, 0.1, 0.03, 0.04, 0.01, 0.01])
    return weights / weights.sum()


def load_catalogue(csv_path: str | None, seed: int = 7) -> tuple[pd.DataFrame, str]:
    """Raw catalogue frame and where it came from: the given CSV, else the synthetic one."""
    if csv_path:
        return read_raw_catalogue(csv_path), str(csv_path)
    return parse_raw_catalogue(synthetic_catalogue_csv(seed=seed), source="synthetic"), "synthetic"
