"""App recommendations: item-item co-occurrence blended with the user's categories, charts fallback.

For a user with enough history, an app scores by how often it was downloaded by users who also
downloaded the user's apps (cosine-normalised co-occurrence, so blockbusters do not drown
everything) plus how much of the user's history is in the app's category. Users with little
history get the charts (top apps per category, their own categories first). Already downloaded
apps are never recommended. Results go to DynamoDB as sk="REC" items, per the table contract.

Offline evaluation holds out each user's latest download and compares hit rate at 10 with a
most-popular baseline; both numbers land in the asset's metadata on every materialization.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from scipy import sparse

from appdata import aws
from appdata.analytics.marts import ALL_DOWNLOADS, CHART_DAYS, read_mart

TOP_N = 10
MIN_HISTORY = 3  # fewer distinct apps than this: charts instead of co-occurrence
MAX_HISTORY = 200  # per user, most recent apps feeding the co-occurrence (bounds its cost)
W_COOCCURRENCE = 0.6
W_CATEGORY = 0.4
METHOD_COOCCURRENCE = "item-cooccurrence+category"
METHOD_CHARTS = "charts"

USER_APPS_SQL = f"""
SELECT d.user_id, d.app, d.category, COUNT(*) AS downloads, MAX(d.download_date) AS last_download
FROM {ALL_DOWNLOADS} d
GROUP BY d.user_id, d.app, d.category"""


def load_user_apps(engine: sa.Engine) -> pd.DataFrame:
    """One row per (user, app): how often and when last downloaded, from batch and stream."""
    with engine.connect() as conn:
        result = conn.execute(sa.text(USER_APPS_SQL))
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    return normalise_user_apps(frame)


def normalise_user_apps(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["user_id"] = frame["user_id"].astype("int64")
    frame["downloads"] = frame["downloads"].astype("int64")
    frame["last_download"] = pd.to_datetime(frame["last_download"]).dt.date
    return frame.sort_values(["user_id", "last_download", "app"], kind="stable").reset_index(drop=True)


def user_apps_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """The same (user, app) table from event frames (generated data, no warehouse needed)."""
    grouped = events.groupby(["user_id", "app", "category"], as_index=False).agg(
        downloads=("event_id", "size"), last_download=("download_date", "max"))
    return normalise_user_apps(grouped)


def charts_from_user_apps(user_apps: pd.DataFrame, days: int = CHART_DAYS, size: int = TOP_N) -> pd.DataFrame:
    """Charts like mart_charts, from (user, app) rows: distinct users over the trailing window.

    Used where the mart cannot be (offline evaluation on held-out data, an empty mart).
    """
    if user_apps.empty:
        return pd.DataFrame(columns=["category", "chart_rank", "app", "downloads"])
    latest = max(user_apps["last_download"])
    recent = user_apps[user_apps["last_download"] >= latest - dt.timedelta(days=days - 1)]
    counts = recent.groupby(["category", "app"], as_index=False)["downloads"].sum()
    counts = counts.sort_values(["category", "downloads", "app"], ascending=[True, False, True])
    counts["chart_rank"] = counts.groupby("category").cumcount() + 1
    return counts[counts["chart_rank"] <= size][["category", "chart_rank", "app", "downloads"]].reset_index(drop=True)


@dataclass
class Recommendation:
    user_id: int
    apps: list[dict[str, Any]]
    method: str


@dataclass
class Recommender:
    """A model fitted on (user, app) rows; recommends for any user id, known or not."""

    user_apps: pd.DataFrame
    charts: pd.DataFrame
    w_cooccurrence: float = W_COOCCURRENCE
    w_category: float = W_CATEGORY
    min_history: int = MIN_HISTORY
    _fitted: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        ua = self.user_apps
        apps = ua.drop_duplicates("app")[["app", "category"]].sort_values("app").reset_index(drop=True)
        self.app_names = apps["app"].to_numpy(dtype=object)
        self.app_category = apps["category"].to_numpy(dtype=object)
        self.app_index = {a: i for i, a in enumerate(self.app_names)}
        self.user_ids = np.array(sorted(ua["user_id"].unique()), dtype="int64")
        self.user_index = {int(u): i for i, u in enumerate(self.user_ids)}
        categories = sorted(set(self.app_category))
        self.category_index = {c: i for i, c in enumerate(categories)}
        n_users, n_apps = len(self.user_ids), len(self.app_names)

        rows = ua["user_id"].map(self.user_index).to_numpy()
        cols = ua["app"].map(self.app_index).to_numpy()
        self.history = sparse.csr_matrix((np.ones(len(ua)), (rows, cols)), shape=(n_users, n_apps))
        self.history.data[:] = 1.0
        # Co-occurrence from each user's most recent MAX_HISTORY apps only.
        recent = ua.groupby("user_id", sort=False).tail(MAX_HISTORY)
        r_rows = recent["user_id"].map(self.user_index).to_numpy()
        r_cols = recent["app"].map(self.app_index).to_numpy()
        recent_matrix = sparse.csr_matrix((np.ones(len(recent)), (r_rows, r_cols)), shape=(n_users, n_apps))
        recent_matrix.data[:] = 1.0
        self.popularity = np.asarray(self.history.sum(axis=0)).ravel()  # distinct users per app
        recent_pop = np.asarray(recent_matrix.sum(axis=0)).ravel()
        scale = sparse.diags(1.0 / np.sqrt(np.maximum(recent_pop, 1.0)))
        normalised = recent_matrix @ scale
        similarity = (normalised.T @ normalised).tocsr()
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        self.similarity = similarity

        app_cat = np.array([self.category_index[c] for c in self.app_category], dtype="int64")
        self.app_cat = app_cat
        cat_onehot = sparse.csr_matrix((np.ones(n_apps), (np.arange(n_apps), app_cat)),
                                       shape=(n_apps, len(categories)))
        per_category = np.asarray((self.history @ cat_onehot).todense())
        totals = per_category.sum(axis=1, keepdims=True)
        self.category_share = np.divide(per_category, totals, out=np.zeros_like(per_category), where=totals > 0)
        best_in_category = np.zeros(len(categories))
        np.maximum.at(best_in_category, app_cat, self.popularity)
        self.popularity_in_category = 0.5 + 0.5 * self.popularity / np.maximum(best_in_category[app_cat], 1.0)
        self.global_order = np.lexsort((self.app_names, -self.popularity))
        charts = self.charts.sort_values(["chart_rank", "downloads"], ascending=[True, False], kind="stable")
        self.charts_by_category = {c: list(g["app"]) for c, g in charts.groupby("category", sort=True)}
        self.chart_category = dict(zip(charts["app"], charts["category"]))
        self.charts_overall = list(charts.sort_values(["downloads", "chart_rank", "app"],
                                                      ascending=[False, True, True])["app"])

    # -- scoring ------------------------------------------------------------------------------
    def _scores(self, rows: np.ndarray) -> np.ndarray:
        """Blended scores (users x apps) for the given history rows; downloaded apps at -inf."""
        history = self.history[rows]
        cooc = np.asarray((history @ self.similarity).todense())
        peak = cooc.max(axis=1, keepdims=True)
        cooc = np.divide(cooc, peak, out=np.zeros_like(cooc), where=peak > 0)
        category = self.category_share[rows][:, self.app_cat] * self.popularity_in_category
        tie_break = 1e-6 * self.popularity / max(self.popularity.max(), 1.0)
        scores = self.w_cooccurrence * cooc + self.w_category * category + tie_break
        scores[history.toarray() > 0] = -np.inf
        return scores

    def _charts_for(self, user_id: int, downloaded: set[str], n: int) -> list[dict[str, Any]]:
        """Charts of the user's categories (by share), then the overall charts, then popularity."""
        picks: list[str] = []
        row = self.user_index.get(user_id)
        if row is not None:
            shares = self.category_share[row]
            names = list(self.category_index)
            for ci in np.argsort(-shares, kind="stable"):
                if shares[ci] <= 0:
                    break
                picks.extend(self.charts_by_category.get(names[ci], []))
        picks.extend(self.charts_overall)
        picks.extend(self.app_names[self.global_order])
        out: list[dict[str, Any]] = []
        seen = set(downloaded)
        for app in picks:
            if app in seen:
                continue
            seen.add(app)
            index = self.app_index.get(app)
            category = self.app_category[index] if index is not None else self.chart_category.get(app, "")
            out.append({"app": str(app), "category": str(category), "score": round(1.0 - len(out) / (n * 2), 6)})
            if len(out) == n:
                break
        return out

    def downloaded(self, user_id: int) -> set[str]:
        row = self.user_index.get(user_id)
        if row is None:
            return set()
        return set(self.app_names[self.history[row].indices])

    def recommend(self, user_ids: Iterable[int], n: int = TOP_N, chunk: int = 256) -> list[Recommendation]:
        user_ids = [int(u) for u in user_ids]
        counts = np.diff(self.history.indptr)
        out: dict[int, Recommendation] = {}
        rich = [u for u in user_ids if u in self.user_index and counts[self.user_index[u]] >= self.min_history]
        for start in range(0, len(rich), chunk):
            block = rich[start:start + chunk]
            rows = np.array([self.user_index[u] for u in block])
            scores = self._scores(rows)
            for user_id, row_scores in zip(block, scores):
                finite = np.flatnonzero(np.isfinite(row_scores))
                k = min(n, len(finite))
                top = finite[np.argpartition(-row_scores[finite], k - 1)[:k]] if k else finite
                top = top[np.lexsort((self.app_names[top], -row_scores[top]))]
                apps = [{"app": str(self.app_names[i]), "category": str(self.app_category[i]),
                         "score": round(float(row_scores[i]), 6)} for i in top]
                if len(apps) < n:  # a tiny catalogue: top up from the charts
                    apps += self._charts_for(user_id, self.downloaded(user_id) | {a["app"] for a in apps}, n - len(apps))
                out[user_id] = Recommendation(user_id, apps, METHOD_COOCCURRENCE)
        for user_id in user_ids:
            if user_id not in out:
                out[user_id] = Recommendation(user_id, self._charts_for(user_id, self.downloaded(user_id), n), METHOD_CHARTS)
        return [out[u] for u in user_ids]

    def most_popular(self, user_id: int, n: int = TOP_N) -> list[str]:
        """The baseline: the most downloaded apps the user does not have."""
        have = self.downloaded(user_id)
        picks = []
        for i in self.global_order:
            if self.app_names[i] not in have:
                picks.append(str(self.app_names[i]))
                if len(picks) == n:
                    break
        return picks


@dataclass(frozen=True)
class Evaluation:
    users: int
    hit_rate: float
    baseline_hit_rate: float
    hits: int
    baseline_hits: int

    def as_metadata(self) -> dict[str, Any]:
        return {"eval_users": self.users, "hit_rate_at_10": round(self.hit_rate, 4),
                "baseline_most_popular_hit_rate_at_10": round(self.baseline_hit_rate, 4),
                "lift_over_baseline": round(self.hit_rate / self.baseline_hit_rate, 2) if self.baseline_hit_rate else None}


def evaluate(user_apps: pd.DataFrame, n: int = TOP_N, **weights: float) -> Evaluation:
    """Leave-latest-out: hide each user's most recent app, train on the rest, count hits at n.

    Users with a single app have nothing left to learn from and are not counted.
    """
    ordered = user_apps.sort_values(["user_id", "last_download", "app"], kind="stable")
    sizes = ordered.groupby("user_id")["app"].transform("size")
    eligible = ordered[sizes >= 2]
    held_out = eligible.groupby("user_id", sort=True).tail(1)
    train = ordered.drop(index=held_out.index)
    if held_out.empty:
        return Evaluation(0, 0.0, 0.0, 0, 0)
    model = Recommender(train, charts_from_user_apps(train), **weights)
    targets = dict(zip(held_out["user_id"].astype(int), held_out["app"]))
    recs = model.recommend(list(targets), n=n)
    hits = sum(targets[r.user_id] in {a["app"] for a in r.apps} for r in recs)
    baseline = sum(targets[u] in set(model.most_popular(u, n)) for u in targets)
    users = len(targets)
    return Evaluation(users, hits / users, baseline / users, hits, baseline)


# -- DynamoDB ------------------------------------------------------------------------------------
def rec_item(rec: Recommendation, generated_at: str) -> dict[str, Any]:
    """The sk="REC" item, per the table contract (written by `aws.batch_write_items`)."""
    return {"user_id": str(rec.user_id), "sk": "REC", "apps": rec.apps, "generated_at": generated_at,
            "method": rec.method}


def write_recommendations(client: Any, table: str, recs: list[Recommendation]) -> int:
    """One REC item per user (BatchWriteItem, unprocessed items retried); returns items written."""
    generated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return aws.batch_write_items(client, table, [rec_item(r, generated_at) for r in recs])


def load_charts(engine: sa.Engine, user_apps: pd.DataFrame) -> pd.DataFrame:
    """mart_charts, or charts computed from the downloads when the mart is empty or absent."""
    charts = read_mart(engine, "mart_charts")
    if charts.empty:
        return charts_from_user_apps(user_apps)
    charts["chart_rank"] = charts["chart_rank"].astype("int64")
    charts["downloads"] = charts["downloads"].astype("int64")
    return charts[["category", "chart_rank", "app", "downloads"]]


def fit_from_warehouse(engine: sa.Engine) -> Recommender:
    user_apps = load_user_apps(engine)
    return Recommender(user_apps, load_charts(engine, user_apps))


def refresh_user_recommendations(engine: sa.Engine, dynamodb_resource: Any, user_ids: Iterable[int]) -> int:
    """Recompute and write the REC items of `user_ids` (e.g. the users a stream drain touched).

    The model is fitted on all downloads in the warehouse, so the drain must have loaded its
    events before calling this. Returns the number of items written.
    """
    ids = sorted({int(u) for u in user_ids})
    if not ids:
        return 0
    model = fit_from_warehouse(engine)
    return write_recommendations(dynamodb_resource.get_client(), dynamodb_resource.table_name, model.recommend(ids))


def refresh_all_recommendations(engine: sa.Engine, dynamodb_resource: Any) -> tuple[int, Recommender, list[Recommendation]]:
    model = fit_from_warehouse(engine)
    recs = model.recommend(model.user_ids.tolist())
    written = write_recommendations(dynamodb_resource.get_client(), dynamodb_resource.table_name, recs)
    return written, model, recs
