"""The dashboard's numbers: filtered aggregates of mart_download_facts, small cells suppressed.

Every figure the dashboard (page or JSON) shows comes from here, so one rule holds everywhere:
no group of fewer than `k` distinct users is published (`DEFAULT_K` = 5). Groups are counted
with COUNT(DISTINCT user_id) on the fact mart, so the count is exact whatever the filters, and a
group under k is dropped here, never sent and hidden by the page; each section says how many of
its groups were withheld.

Complementary (secondary) suppression: a response also carries the totals, so the rows it does
not show can be recovered as totals minus the rows shown (each user has one age band and one
state; each download one category, app and day). So in every section the rows left out must
together hold 0 or at least k distinct users; when they hold fewer, the smallest shown group is
withheld too (it has k users, so one is always enough). The `suppressed` count includes it.

Category medians (per-app page) are taken only over the category's apps that themselves have at
least k users under the same filters, and, cell by cell, only over those apps whose own cell
(their users in that age band, state or week) holds k users or more, with at least
`MEDIAN_MIN_APPS` (3) such cells: a median of three values is one app's value, and a reader who
posts two apps of their own can bracket it onto a third app's cell, so every cell that can
enter a median must itself be publishable. A median is also withheld where the whole category
cell has fewer than k users.

A section with no row says why in its `note`: nothing matched the filters, no group has reached
k users yet (with how many were withheld), or the only groups of k users would reveal the smaller
ones. A per-app page that cannot be published says why too (`why_no_profile`): no downloads of
the app yet, or not k users yet.

What this does not stop: differencing across requests (the same question with a filter moved by
one day, or one value, can differ by one person). See appdata.api.dashboard.

The SQL is plain GROUP BY / CASE / CAST(DATE_TRUNC(...) AS DATE) with bound parameters, which
DuckDB, PostgreSQL and Redshift all run. Nothing here imports Dagster.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import sqlalchemy as sa

from appdata.analytics.privacy import DEFAULT_K
from appdata.sources.users import AGE_BANDS

FACTS = "mart_download_facts"
GRAINS = ("day", "week", "month")
UNKNOWN_CATEGORY = "UNKNOWN"  # the catalogue's repaired rows: listed last, never leading
TOP_APPS = 10
MEDIAN_MIN_APPS = 3  # a category median needs this many apps of k users or more
ALSO_DOWNLOADED = 10
AGE_BAND_LABELS = tuple(label for _, _, label in AGE_BANDS)


@dataclass(frozen=True)
class Filters:
    """What the user picked; None means all."""

    start: dt.date | None = None
    end: dt.date | None = None
    category: str | None = None
    app: str | None = None
    state: str | None = None
    age_band: str | None = None
    grain: str = "week"

    def where(self, alias: str = "f") -> tuple[str, dict[str, Any]]:
        """A WHERE clause on the fact mart (values bound, never pasted) and its parameters."""
        clauses, params = ["1 = 1"], {}
        for column, op, value in (("download_date", ">=", self.start), ("download_date", "<=", self.end),
                                  ("category", "=", self.category), ("app", "=", self.app),
                                  ("location", "=", self.state), ("age_band", "=", self.age_band)):
            if value is not None:
                name = f"p_{column}_{len(params)}"
                clauses.append(f"{alias}.{column} {op} :{name}")
                params[name] = value
        return " AND ".join(clauses), params

    def bucket(self, alias: str = "f") -> str:
        """The time bucket of a row: its day, or the Monday of its week, or the 1st of its month."""
        if self.grain == "day":
            return f"{alias}.download_date"
        return f"CAST(DATE_TRUNC('{self.grain}', {alias}.download_date) AS DATE)"


def category_order(categories: list[str], weights: dict[str, float] | None = None) -> list[str]:
    """Largest first (or alphabetical), UNKNOWN always last."""
    weights = weights or {}
    return sorted(categories, key=lambda c: (c == UNKNOWN_CATEGORY, -weights.get(c, 0), c))


def _frame(conn: sa.Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    result = conn.execute(sa.text(sql), params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):  # DATE_TRUNC buckets come back as timestamps on some drivers
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, float):
        return round(value, 2)
    return value


def _section(frame: pd.DataFrame, suppressed: int, title: str, note: str | None = None, **extra: Any) -> dict[str, Any]:
    rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False)]
    return {"title": title, "columns": list(frame.columns), "rows": rows, "suppressed": int(suppressed),
            "source": FACTS, "note": None if rows else note, **extra}


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def why_empty(noun: str, k: int, withheld: int, eligible: int, filtered: bool) -> str:
    """Why a section shows no row. `withheld`: its groups withheld (under k users, or withheld so
    as not to reveal those); `eligible`: how many of its groups had k users or more."""
    if withheld == 0:
        return "no downloads match these filters" if filtered else "no downloads yet"
    if eligible == 0:
        return f"no {noun} has reached {k} users yet: {_count(withheld, 'group')} withheld for privacy"
    return (f"withheld for privacy: showing the {_count(eligible, noun)} of {k} users or more beside the "
            f"totals would reveal the {_count(withheld - eligible, 'smaller group')}")


def _filtered(filters: Filters, *ignore: str) -> bool:
    return any(getattr(filters, name) is not None for name in ("start", "end", "category", "app", "state", "age_band")
               if name not in ignore)


ALL = "'all'"  # the key of a single group holding every row (totals)


def _grouped(conn: sa.Connection, filters: Filters, key_sql: str, key: str, k: int,
             order: str = "downloads DESC") -> tuple[pd.DataFrame, int]:
    """Downloads, distinct users and minutes per group; (groups of k users or more, groups withheld)."""
    where, params = filters.where()
    group_by = "" if key_sql == ALL else f" GROUP BY {key_sql}"
    sql = f"""
SELECT g.{key}, g.downloads, g.users, g.minutes, CASE WHEN g.users >= :k THEN 1 ELSE 0 END AS shown
FROM (SELECT {key_sql} AS {key}, SUM(f.downloads) AS downloads, COUNT(DISTINCT f.user_id) AS users,
             SUM(f.minutes_spent) AS minutes
      FROM {FACTS} f WHERE {where}{group_by}) g
ORDER BY g.{order}, g.{key}"""
    frame = _frame(conn, sql, {**params, "k": k})
    frame = frame.fillna({"downloads": 0, "minutes": 0})
    withheld = int((frame["shown"] == 0).sum()) if not frame.empty else 0
    frame = frame[frame["shown"] == 1].drop(columns="shown").reset_index(drop=True)
    for column in ("downloads", "users", "minutes"):
        frame[column] = frame[column].astype("int64")
    return frame, withheld


def _bindable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.date()
    return value.item() if hasattr(value, "item") else value


def _users_outside(conn: sa.Connection, filters: Filters, key_sql: str, keys: list[Any]) -> int:
    """Distinct users of the filtered rows whose group is not among `keys` (what totals minus shown reveal)."""
    where, params = filters.where()
    names = [f"p_shown_{i}" for i in range(len(keys))]
    outside = f" AND ({key_sql} IS NULL OR {key_sql} NOT IN ({', '.join(':' + n for n in names)}))" if keys else ""
    sql = f"SELECT COUNT(DISTINCT f.user_id) FROM {FACTS} f WHERE {where}{outside}"
    return int(conn.execute(sa.text(sql), {**params, **dict(zip(names, map(_bindable, keys)))}).scalar_one())


def _complementary(conn: sa.Connection, filters: Filters, key_sql: str, key: str, k: int,
                   shown: pd.DataFrame, withheld: int, published: pd.DataFrame | None = None,
                   ) -> tuple[pd.DataFrame, int]:
    """Secondary suppression: the rows of `shown` to publish (all, or `published`, a subset) such
    that the rows left out hold 0 or at least k distinct users; withheld counts any extra group."""
    published = shown if published is None else published
    if len(published) < len(shown) or (withheld == 0 and len(published) == len(shown)):
        return published, withheld  # nothing left out, or a left-out group of k users or more
    left_out = _users_outside(conn, filters, key_sql, list(published[key]))
    if 0 < left_out < k and not published.empty:
        smallest = published.sort_values(["users", key], kind="stable").index[0]
        return published.drop(index=smallest).reset_index(drop=True), withheld + 1
    return published, withheld


def freshness(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """mart -> when it was built (UTC) and the latest download date it includes."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("mart_builds"):
            return {}
        frame = _frame(conn, "SELECT mart, built_at, row_count, data_through FROM mart_builds ORDER BY mart", {})
    return {row.mart: {"built_at": pd.Timestamp(row.built_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "data_through": _plain(pd.Timestamp(row.data_through).date()) if row.data_through else None,
                       "rows": int(row.row_count)}
            for row in frame.itertuples(index=False)}


def _has_facts(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table(FACTS)


def options(engine: sa.Engine, k: int = DEFAULT_K) -> dict[str, Any]:
    """The filter choices: only values whose whole group has k users, categories UNKNOWN last."""
    empty = {"categories": [], "apps": [], "states": [], "age_bands": [], "min_date": None, "max_date": None,
             "grains": list(GRAINS), "k": k}
    with engine.connect() as conn:
        if not _has_facts(conn):
            return empty
        everything = Filters()
        categories, _ = _grouped(conn, everything, "f.category", "category", k)
        apps, _ = _grouped(conn, everything, "f.app", "app", k)
        states, _ = _grouped(conn, everything, "f.location", "state", k)
        bands, _ = _grouped(conn, everything, "f.age_band", "age_band", k)
        span = conn.execute(sa.text(f"SELECT MIN(download_date), MAX(download_date) FROM {FACTS}")).one()
    weights = dict(zip(categories["category"], categories["downloads"]))
    return {**empty,
            "categories": category_order(list(categories["category"]), weights),
            "apps": sorted(apps["app"]), "states": sorted(states["state"]),
            "age_bands": [b for b in AGE_BAND_LABELS if b in set(bands["age_band"])],
            "min_date": _plain(span[0]), "max_date": _plain(span[1])}


def overview(engine: sa.Engine, filters: Filters, k: int = DEFAULT_K) -> dict[str, Any]:
    """Totals, downloads over time, by category / age band / state, top apps and time spent."""
    with engine.connect() as conn:
        if not _has_facts(conn):
            return {"k": k, "filters": _filters_dict(filters), "totals": None, "sections": {}, "freshness": None}
        totals, _ = _grouped(conn, filters, ALL, "scope", k)

        eligible: dict[str, int] = {}

        def section(key_sql: str, key: str, **kwargs: Any) -> tuple[pd.DataFrame, int]:
            shown, withheld = _grouped(conn, filters, key_sql, key, k, **kwargs)
            eligible[key] = len(shown)
            return _complementary(conn, filters, key_sql, key, k, shown, withheld)

        over_time, t_withheld = section(filters.bucket(), "period_start", order="period_start")
        by_category, c_withheld = section("f.category", "category")
        by_band, b_withheld = section("f.age_band", "age_band")
        by_state, s_withheld = section("f.location", "state")
        apps, a_withheld = _grouped(conn, filters, "f.app", "app", k)
        eligible["app"] = len(apps)
        by_app, a_withheld = _complementary(conn, filters, "f.app", "app", k, apps, a_withheld, apps.head(TOP_APPS))
    by_category = by_category.set_index("category").loc[
        category_order(list(by_category["category"]), dict(zip(by_category["category"], by_category["downloads"])))
    ].reset_index()
    by_band = by_band.set_index("age_band").loc[[b for b in AGE_BAND_LABELS if b in set(by_band["age_band"])]
                                                ].reset_index()
    time_spent = by_category.assign(avg_minutes=by_category["minutes"] / by_category["downloads"])
    time_spent = time_spent.sort_values(["avg_minutes", "category"], ascending=[False, True])
    count_cols = ["downloads", "users"]
    filtered = _filtered(filters)

    def note(noun: str, key: str, withheld: int) -> str:
        return why_empty(noun, k, withheld, eligible[key], filtered)

    sections = {
        "over_time": _section(over_time[["period_start", *count_cols]], t_withheld, f"Downloads per {filters.grain}",
                              note(filters.grain, "period_start", t_withheld), grain=filters.grain),
        "by_category": _section(by_category[["category", *count_cols]], c_withheld, "Downloads by category",
                                note("category", "category", c_withheld)),
        "by_age_band": _section(by_band[["age_band", *count_cols]], b_withheld, "Audience by age band",
                                note("age band", "age_band", b_withheld)),
        "by_state": _section(by_state[["state", *count_cols]], s_withheld, "Audience by state",
                             note("state", "state", s_withheld)),
        "top_apps": _section(by_app[["app", *count_cols]], a_withheld, f"Top {TOP_APPS} apps",
                             note("app", "app", a_withheld)),
        "time_spent": _section(time_spent[["category", "avg_minutes", "downloads"]], c_withheld,
                               "Average minutes spent per download, by category", note("category", "category", c_withheld)),
    }
    total = None
    if not totals.empty:
        total = {"downloads": int(totals["downloads"][0]), "users": int(totals["users"][0])}
    return {"k": k, "filters": _filters_dict(filters), "totals": total, "sections": sections,
            "freshness": freshness(engine).get(FACTS)}


def _filters_dict(filters: Filters) -> dict[str, Any]:
    return {k: _plain(v) for k, v in filters.__dict__.items()}


def _category_of(conn: sa.Connection, app: str) -> str | None:
    row = conn.execute(sa.text(f"SELECT MIN(category) FROM {FACTS} WHERE app = :app"), {"app": app}).one()
    return row[0]


def _median_apps(conn: sa.Connection, filters: Filters, k: int) -> list[str]:
    """The category's apps a median may be taken over: those with k users or more under the
    filters; none when fewer than MEDIAN_MIN_APPS qualify (see the module docstring)."""
    apps, _ = _grouped(conn, replace(filters, app=None), "f.app", "app", k)
    return list(apps["app"]) if len(apps) >= MEDIAN_MIN_APPS else []


def _cellwise_median(values: pd.DataFrame, users: pd.DataFrame, median_apps: list[str], k: int) -> pd.Series:
    """Per group (column), the median of `values` over the `median_apps` whose own cell in that
    group holds k users or more; NaN where fewer than MEDIAN_MIN_APPS such cells exist. A cell of
    an app under k in a group never enters, so no median can equal (or be bracketed onto) it."""
    apps = [a for a in median_apps if a in values.index]
    eligible = values.loc[apps].where(users.loc[apps] >= k)
    median = eligible.median(axis=0)
    return median.where(eligible.count(axis=0) >= MEDIAN_MIN_APPS)


def _app_section(conn: sa.Connection, filters: Filters, key_sql: str, key: str, k: int,
                 **kwargs: Any) -> tuple[pd.DataFrame, int, int]:
    """The app's own groups, with small and complementary cells withheld; (rows, withheld,
    groups of k users or more before the complementary rule)."""
    shown, withheld = _grouped(conn, filters, key_sql, key, k, **kwargs)
    return (*_complementary(conn, filters, key_sql, key, k, shown, withheld), len(shown))


def _app_note(noun: str, k: int, withheld: int, eligible: int) -> str:
    """Why a per-app section is empty, in the app's words."""
    if withheld == 0:
        return "no downloads of this app match these dates"
    if eligible == 0:
        return (f"no {noun} of this app has reached {k} users yet: {_count(withheld, noun)} withheld "
                f"for privacy")
    return why_empty(noun, k, withheld, eligible, True)


def _vs_category_median(conn: sa.Connection, filters: Filters, app: str, key_sql: str, key: str, k: int,
                        median_apps: list[str], keys: list[str] | None = None) -> tuple[pd.DataFrame, int, int]:
    """The app's users per group (share of its users) beside the median share over `median_apps`."""
    category_filters = replace(filters, app=None)
    where, params = category_filters.where()
    per_app = _frame(conn, f"""
SELECT {key_sql} AS {key}, f.app, COUNT(DISTINCT f.user_id) AS users
FROM {FACTS} f WHERE {where} GROUP BY {key_sql}, f.app""", params)
    category_cells, _ = _grouped(conn, category_filters, key_sql, key, k)
    mine, withheld, eligible = _app_section(conn, filters, key_sql, key, k)
    if per_app.empty or mine.empty:
        return pd.DataFrame(columns=[key, "users", "share_pct", "category_median_share_pct"]), withheld, eligible
    per_app["users"] = per_app["users"].astype("int64")
    wide = per_app.pivot_table(index="app", columns=key, values="users", fill_value=0, aggfunc="sum")
    shares = wide.div(wide.sum(axis=1), axis=0) * 100.0
    median = _cellwise_median(shares, wide, median_apps, k).dropna()
    publishable = set(category_cells[key]) & set(median.index)
    own_share = 100.0 * mine.set_index(key)["users"] / int(wide.loc[app].sum()) if app in wide.index else None
    order = keys if keys is not None else list(mine.sort_values(["users", key], ascending=[False, True])[key])
    rows = [{key: g, "users": int(mine.set_index(key)["users"][g]), "share_pct": float(own_share[g]),
             "category_median_share_pct": float(median[g]) if g in publishable else None}
            for g in order if g in set(mine[key])]
    return pd.DataFrame(rows, columns=[key, "users", "share_pct", "category_median_share_pct"]), withheld, eligible


def app_profile(engine: sa.Engine, app: str, filters: Filters, k: int = DEFAULT_K) -> dict[str, Any] | None:
    """One app against its category's median app: over time, by age band and state, time spent,
    and the apps its users also downloaded. None when the app has fewer than k users (or none)."""
    filters = replace(filters, app=app, category=None, state=None, age_band=None)
    with engine.connect() as conn:
        if not _has_facts(conn):
            return None
        totals, _ = _grouped(conn, replace(filters, start=None, end=None), "f.app", "app", k)
        if totals.empty:
            return None
        category = _category_of(conn, app)
        filters = replace(filters, category=category)
        mine_total, _ = _grouped(conn, filters, "f.app", "app", k)
        median_apps = _median_apps(conn, filters, k)
        over_time = _over_time_vs_median(conn, filters, app, k, median_apps)
        bands, b_withheld, b_eligible = _vs_category_median(conn, filters, app, "f.age_band", "age_band", k,
                                                            median_apps, list(AGE_BAND_LABELS))
        states, s_withheld, s_eligible = _vs_category_median(conn, filters, app, "f.location", "state", k,
                                                             median_apps)
        minutes = _time_spent_vs_median(conn, filters, app, k, median_apps)
        also = _also_downloaded(conn, filters, app, k)
    sections = {
        "over_time": over_time,
        "by_age_band": _section(bands, b_withheld, "Audience by age band: share of the app's users vs. category median",
                                _app_note("age band", k, b_withheld, b_eligible)),
        "by_state": _section(states, s_withheld, "Audience by state: share of the app's users vs. category median",
                             _app_note("state", k, s_withheld, s_eligible)),
        "time_spent": minutes,
        "also_downloaded": also,
    }
    total = None if mine_total.empty else {"downloads": int(mine_total["downloads"][0]),
                                           "users": int(mine_total["users"][0])}
    return {"k": k, "app": app, "category": category, "filters": _filters_dict(filters), "totals": total,
            "sections": sections, "freshness": freshness(engine).get(FACTS)}


def why_no_profile(engine: sa.Engine, app: str, k: int = DEFAULT_K) -> str:
    """Why `app` has no page (app_profile gave None): no mart yet, no downloads of it yet, or
    fewer than k users so far. Saying which is no more than the overview's withheld counts
    already tell (a group of 1 to k-1 users exists); the number itself is never given."""
    with engine.connect() as conn:
        if not _has_facts(conn):
            return "no mart built yet: the dashboard fills once the analytics marts have run"
        found = conn.execute(sa.text(f"SELECT COUNT(*) FROM {FACTS} WHERE app = :app"), {"app": app}).scalar_one()
    if not found:
        return f"no downloads of {app!r} yet"
    return f"{app!r} has not reached {k} users yet: apps with fewer are not published, for privacy"


def _over_time_vs_median(conn: sa.Connection, filters: Filters, app: str, k: int,
                         median_apps: list[str]) -> dict[str, Any]:
    """The app's downloads per bucket beside the median over `median_apps` with k users in that bucket."""
    where, params = replace(filters, app=None).where()
    bucket = filters.bucket()
    per_app = _frame(conn, f"""
SELECT {bucket} AS period_start, f.app, SUM(f.downloads) AS downloads, COUNT(DISTINCT f.user_id) AS users
FROM {FACTS} f WHERE {where} GROUP BY {bucket}, f.app""", params)
    mine, withheld, eligible = _app_section(conn, filters, bucket, "period_start", k, order="period_start")
    category_cells, _ = _grouped(conn, replace(filters, app=None), bucket, "period_start", k, order="period_start")
    columns = ["period_start", "downloads", "users", "category_median_downloads"]
    if per_app.empty or mine.empty:
        return _section(pd.DataFrame(columns=columns), withheld, f"Downloads per {filters.grain} vs. category median",
                        _app_note(filters.grain, k, withheld, eligible), grain=filters.grain)
    per_app[["downloads", "users"]] = per_app[["downloads", "users"]].astype("int64")
    downloads = per_app.pivot_table(index="app", columns="period_start", values="downloads", fill_value=0, aggfunc="sum")
    users = per_app.pivot_table(index="app", columns="period_start", values="users", fill_value=0, aggfunc="sum")
    median = _cellwise_median(downloads, users, median_apps, k).dropna()
    publishable = set(category_cells["period_start"]) & set(median.index)
    frame = mine.assign(category_median_downloads=[float(median[p]) if p in publishable else None
                                                   for p in mine["period_start"]])
    return _section(frame[columns], withheld, f"Downloads per {filters.grain} vs. category median",
                    grain=filters.grain)


def _time_spent_vs_median(conn: sa.Connection, filters: Filters, app: str, k: int,
                          median_apps: list[str]) -> dict[str, Any]:
    """The app's average minutes per download beside the median of `median_apps`."""
    per_app, _ = _grouped(conn, replace(filters, app=None), "f.app", "app", k)
    columns = ["app", "avg_minutes", "downloads", "category_median_avg_minutes"]
    mine = per_app[per_app["app"] == app]
    if mine.empty:
        return _section(pd.DataFrame(columns=columns), 1, "Average minutes spent per download vs. category median",
                        f"this app has not reached {k} users within these dates")
    eligible = per_app[per_app["app"].isin(median_apps)]
    median = float((eligible["minutes"] / eligible["downloads"]).median()) if not eligible.empty else None
    frame = pd.DataFrame([{"app": app, "avg_minutes": float(mine["minutes"].iloc[0] / mine["downloads"].iloc[0]),
                           "downloads": int(mine["downloads"].iloc[0]), "category_median_avg_minutes": median}],
                         columns=columns)
    return _section(frame, 0, "Average minutes spent per download vs. category median")


def _also_downloaded(conn: sa.Connection, filters: Filters, app: str, k: int) -> dict[str, Any]:
    """Apps most often downloaded by this app's users: users in common, ranked by the cosine
    co-occurrence the recommender uses (common users / sqrt(users of each)); pairs under k users withheld."""
    others = replace(filters, app=None, category=None)
    where, params = others.where("o")
    mine_where, mine_params = replace(others, app=app).where("m")
    sql = f"""
SELECT c.app, c.category, c.users_both, n.users
FROM (SELECT o.app, MIN(o.category) AS category, COUNT(DISTINCT o.user_id) AS users_both
      FROM {FACTS} o
      JOIN (SELECT DISTINCT m.user_id FROM {FACTS} m WHERE {mine_where}) a ON a.user_id = o.user_id
      WHERE {where} AND o.app <> :self_app
      GROUP BY o.app) c
JOIN (SELECT o.app, COUNT(DISTINCT o.user_id) AS users FROM {FACTS} o WHERE {where} GROUP BY o.app) n
  ON n.app = c.app"""
    frame = _frame(conn, sql, {**params, **mine_params, "self_app": app})
    mine_users = _grouped(conn, replace(others, app=app), "f.app", "app", 1)[0]["users"]
    columns = ["app", "category", "users_both", "cooccurrence"]
    title = "Users who downloaded this also downloaded"
    if frame.empty or mine_users.empty:
        return _section(pd.DataFrame(columns=columns), 0, title,
                        "no other app downloaded by this app's users within these dates")
    frame["users_both"] = frame["users_both"].astype("int64")
    withheld = int((frame["users_both"] < k).sum())
    frame = frame[frame["users_both"] >= k].copy()
    frame["cooccurrence"] = frame["users_both"] / (float(mine_users.iloc[0]) * frame["users"].astype(float)) ** 0.5
    frame = frame.sort_values(["cooccurrence", "users_both", "app"], ascending=[False, False, True])
    return _section(frame.head(ALSO_DOWNLOADED)[columns].round({"cooccurrence": 3}), withheld, title,
                    f"no other app shares {k} users with this one yet: {_count(withheld, 'app')} withheld for privacy")
