"""App recommendations: item-item co-occurrence blended with the user's categories, charts fallback.

For a user with enough history, an app scores by how often it was downloaded by users who also
downloaded the user's apps (cosine-normalised co-occurrence, so blockbusters do not drown
everything) plus how much of the user's history is in the app's category. Users with little
history get the charts (top apps per category, their own categories first). Already downloaded
apps are never recommended. Results go to DynamoDB as sk="REC" items, per the table contract.

What is learnt from all users (the app index, the item-item similarity, popularity, the charts)
is a `RecommenderModel`, fitted once and saved to S3 (`layout.RECOMMENDER_MODEL_KEY`); scoring a
user needs only that model and the user's own (user, app) rows (`UserHistories`). So the full
refresh (`refresh_all_recommendations`: fit, save, score everyone) and the incremental one
(`refresh_touched_users`: load the saved model, read the touched users' rows, score them) run
the same scoring code, and the incremental one costs in proportion to the users it touches.

Offline evaluation holds out each user's latest download and compares hit rate at 10 with a
most-popular baseline; both numbers land in the asset's metadata on every materialization.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from botocore.exceptions import ClientError
from scipy import sparse

from appdata import aws
from appdata.analytics.marts import CHART_DAYS, read_mart
from appdata.contract import layout
from appdata.warehouse.loader import read_select
from appdata.warehouse.tables import TABLES

TOP_N = 10
MIN_HISTORY = 3  # fewer distinct apps than this: charts instead of co-occurrence
MAX_HISTORY = 200  # per user, most recent apps feeding the co-occurrence (bounds its cost)
MAX_NEIGHBOURS = 1000  # per app, the most similar apps the model keeps (bounds its size)
W_COOCCURRENCE = 0.6
W_CATEGORY = 0.4
METHOD_COOCCURRENCE = "item-cooccurrence+category"
METHOD_CHARTS = "charts"
USERS_PER_QUERY = 1000  # user ids per `WHERE user_id IN (...)` of the incremental refresh
MODEL_FORMAT = 1
CHART_COLUMNS = ["category", "chart_rank", "app", "downloads"]


def user_apps_query(*, of_users: bool = False) -> sa.Select:
    """One row per (user, app) over batch and stream: downloads and last download day.

    With `of_users`, only the users of the expanding parameter `user_ids`: the filter sits on
    each download table, so an index (PostgreSQL) or the distribution key (Redshift) on user_id
    serves it.
    """
    parts = []
    for name in ("downloads_batch", "downloads_stream"):
        table = TABLES[name]
        part = sa.select(table.c.user_id, table.c.app, table.c.category, table.c.download_date)
        if of_users:
            part = part.where(table.c.user_id.in_(sa.bindparam("user_ids", expanding=True)))
        parts.append(part)
    d = sa.union_all(*parts).subquery("d")
    return (sa.select(d.c.user_id, d.c.app, d.c.category, sa.func.count().label("downloads"),
                      sa.func.max(d.c.download_date).label("last_download"))
            .group_by(d.c.user_id, d.c.app, d.c.category))


def load_user_apps(engine: sa.Engine, user_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """(user, app) rows from batch and stream: every user's, or only `user_ids`' (queried
    USERS_PER_QUERY at a time, so the cost follows the users asked for, not the warehouse)."""
    if user_ids is None:
        return normalise_user_apps(read_select(engine, user_apps_query()))
    ids = sorted({int(u) for u in user_ids})
    query = user_apps_query(of_users=True)
    frames = [read_select(engine, query, {"user_ids": ids[start:start + USERS_PER_QUERY]})
              for start in range(0, len(ids), USERS_PER_QUERY)]
    columns = ["user_id", "app", "category", "downloads", "last_download"]
    return normalise_user_apps(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns))


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
        return pd.DataFrame(columns=CHART_COLUMNS)
    latest = max(user_apps["last_download"])
    recent = user_apps[user_apps["last_download"] >= latest - dt.timedelta(days=days - 1)]
    counts = recent.groupby(["category", "app"], as_index=False)["downloads"].sum()
    counts = counts.sort_values(["category", "downloads", "app"], ascending=[True, False, True])
    counts["chart_rank"] = counts.groupby("category").cumcount() + 1
    return counts[counts["chart_rank"] <= size][CHART_COLUMNS].reset_index(drop=True)


@dataclass
class Recommendation:
    user_id: int
    apps: list[dict[str, Any]]
    method: str


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    matrix.data[:] = 1.0
    return matrix


def _top_per_row(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Each row's k largest entries (ties to the lower column), the rest dropped."""
    counts = np.diff(matrix.indptr)
    if counts.max(initial=0) <= k:
        return matrix
    matrix = matrix.sorted_indices()  # so a stable sort by value breaks ties by column
    keep = [np.arange(start, end) if end - start <= k
            else start + np.argsort(-matrix.data[start:end], kind="stable")[:k]
            for start, end in zip(matrix.indptr[:-1], matrix.indptr[1:]) if end > start]
    kept = np.sort(np.concatenate(keep))
    rows = np.repeat(np.arange(matrix.shape[0]), counts)[kept]
    pruned = sparse.csr_matrix((matrix.data[kept], (rows, matrix.indices[kept])), shape=matrix.shape)
    pruned.sort_indices()
    return pruned


@dataclass
class UserHistories:
    """Some users' own (user, app) rows against a model's app index: all scoring needs of them.

    Apps the model has never seen (new since its fit) cannot feed the co-occurrence (no
    similarity row) nor be recommended, but they still count as downloaded, in the user's
    category shares (by the row's category) and towards MIN_HISTORY, as they would in a refit.
    """

    user_ids: np.ndarray
    known: sparse.csr_matrix  # users x model apps, 1 where downloaded
    category_share: np.ndarray  # users x model categories, over all the user's distinct apps
    app_counts: np.ndarray  # distinct apps per user, unknown ones included
    unknown: dict[int, set[str]]  # per user, downloaded apps the model has never seen

    def __post_init__(self) -> None:
        self.user_index = {int(u): i for i, u in enumerate(self.user_ids)}

    @property
    def unknown_apps(self) -> set[str]:
        return set().union(*self.unknown.values())


@dataclass
class RecommenderModel:
    """What the recommender learns from all users; fitted once, saved, then scores any user."""

    app_names: np.ndarray  # sorted
    app_category: np.ndarray
    # apps x apps: cosine co-occurrence, top MAX_NEIGHBOURS per app. Values of float32 precision (half
    # the bytes to save) held as float64, so scoring does not convert the matrix on every call.
    similarity: sparse.csr_matrix
    popularity: np.ndarray  # distinct users per app
    charts: pd.DataFrame  # CHART_COLUMNS
    fitted_at: dt.datetime
    users: int  # users fitted on
    w_cooccurrence: float = W_COOCCURRENCE
    w_category: float = W_CATEGORY
    min_history: int = MIN_HISTORY

    def __post_init__(self) -> None:
        self.app_index = {a: i for i, a in enumerate(self.app_names)}
        self.app_lookup = pd.Index(self.app_names)
        self.categories = sorted(set(self.app_category))
        self.category_index = {c: i for i, c in enumerate(self.categories)}
        self.app_cat = np.array([self.category_index[c] for c in self.app_category], dtype="int64")
        best_in_category = np.zeros(len(self.categories))
        np.maximum.at(best_in_category, self.app_cat, self.popularity)
        self.popularity_in_category = 0.5 + 0.5 * self.popularity / np.maximum(best_in_category[self.app_cat], 1.0)
        self.global_order = np.lexsort((self.app_names, -self.popularity))
        charts = self.charts.sort_values(["chart_rank", "downloads"], ascending=[True, False], kind="stable")
        self.charts_by_category = {c: list(g["app"]) for c, g in charts.groupby("category", sort=True)}
        self.chart_category = dict(zip(charts["app"], charts["category"]))
        self.charts_overall = list(charts.sort_values(["downloads", "chart_rank", "app"],
                                                      ascending=[False, True, True])["app"])

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, user_apps: pd.DataFrame, charts: pd.DataFrame, *, max_neighbours: int = MAX_NEIGHBOURS,
            fitted_at: dt.datetime | None = None, **weights: Any) -> RecommenderModel:
        """Fit on every user's (user, app) rows (sorted as `normalise_user_apps` leaves them)."""
        ua = user_apps.reset_index(drop=True)
        apps = ua.drop_duplicates("app")[["app", "category"]].sort_values("app").reset_index(drop=True)
        app_names = apps["app"].to_numpy(dtype=object)
        app_codes = pd.Index(app_names).get_indexer(ua["app"])
        user_codes, user_ids = pd.factorize(ua["user_id"], sort=True)
        shape = (len(user_ids), len(app_names))
        history = _binary(user_codes, app_codes, shape)
        # Co-occurrence from each user's most recent MAX_HISTORY apps only.
        recent = ua.groupby("user_id", sort=False).tail(MAX_HISTORY).index.to_numpy()
        recent_matrix = _binary(user_codes[recent], app_codes[recent], shape)
        recent_pop = np.asarray(recent_matrix.sum(axis=0)).ravel()
        normalised = recent_matrix @ sparse.diags(1.0 / np.sqrt(np.maximum(recent_pop, 1.0)))
        similarity = (normalised.T @ normalised).tocsr()
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        return cls(app_names=app_names, app_category=apps["category"].to_numpy(dtype=object),
                   similarity=_top_per_row(similarity, max_neighbours).astype(np.float32).astype(np.float64),
                   popularity=np.asarray(history.sum(axis=0)).ravel(),
                   charts=charts[CHART_COLUMNS].reset_index(drop=True),
                   fitted_at=fitted_at or dt.datetime.now(dt.timezone.utc), users=len(user_ids), **weights)

    # -- the saved form: npz of arrays plus JSON, nothing pickled ------------------------------
    def to_bytes(self) -> bytes:
        meta = {"format": MODEL_FORMAT, "fitted_at": self.fitted_at.isoformat(), "users": self.users,
                "apps": [str(a) for a in self.app_names], "app_categories": [str(c) for c in self.app_category],
                "charts": {c: self.charts[c].tolist() for c in CHART_COLUMNS},
                "weights": {"w_cooccurrence": self.w_cooccurrence, "w_category": self.w_category,
                            "min_history": self.min_history}}
        buffer = io.BytesIO()  # uncompressed: similarities barely compress, and it takes seconds
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                 similarity_data=self.similarity.data.astype(np.float32), similarity_indices=self.similarity.indices,
                 similarity_indptr=self.similarity.indptr, popularity=self.popularity)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RecommenderModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
            if meta.get("format") != MODEL_FORMAT:
                raise ValueError(f"recommender model format {meta.get('format')!r}, expected {MODEL_FORMAT}")
            n = len(meta["apps"])
            similarity = sparse.csr_matrix((arrays["similarity_data"].astype(np.float64),
                                            arrays["similarity_indices"], arrays["similarity_indptr"]), shape=(n, n))
            popularity = arrays["popularity"]
        charts = pd.DataFrame(meta["charts"], columns=CHART_COLUMNS)
        charts = charts.astype({"chart_rank": "int64", "downloads": "int64"})
        return cls(app_names=np.array(meta["apps"], dtype=object),
                   app_category=np.array(meta["app_categories"], dtype=object), similarity=similarity, popularity=popularity, charts=charts,
                   fitted_at=dt.datetime.fromisoformat(meta["fitted_at"]), users=int(meta["users"]), **meta["weights"])

    # -- per-user input -----------------------------------------------------------------------
    def histories(self, user_apps: pd.DataFrame) -> UserHistories:
        """The users of `user_apps` (any users: fitted on or not), indexed against this model."""
        rows = user_apps.drop_duplicates(["user_id", "app"])
        user_codes, user_ids = pd.factorize(rows["user_id"], sort=True)
        n_users, n_categories = len(user_ids), len(self.categories)
        app_codes = self.app_lookup.get_indexer(rows["app"])
        known = app_codes >= 0
        matrix = _binary(user_codes[known], app_codes[known], (n_users, len(self.app_names)))
        category = rows["category"].to_numpy(dtype=object).copy()
        category[known] = self.app_category[app_codes[known]]  # the model's category of an app it knows
        cat_codes = pd.Index(self.categories).get_indexer(category)
        in_model = cat_codes >= 0
        per_category = np.bincount(user_codes[in_model] * n_categories + cat_codes[in_model],
                                   minlength=n_users * n_categories).reshape(n_users, n_categories).astype("float64")
        app_counts = np.bincount(user_codes, minlength=n_users)
        totals = app_counts[:, None].astype("float64")
        share = np.divide(per_category, totals, out=np.zeros_like(per_category), where=totals > 0)
        unknown: dict[int, set[str]] = {}
        for code, app in zip(user_codes[~known], rows["app"].to_numpy(dtype=object)[~known]):
            unknown.setdefault(int(user_ids[code]), set()).add(str(app))
        return UserHistories(np.asarray(user_ids, dtype="int64"), matrix, share, app_counts, unknown)

    # -- scoring: the one implementation, for the full and the incremental refresh ------------
    def downloaded(self, histories: UserHistories, user_id: int) -> set[str]:
        row = histories.user_index.get(user_id)
        if row is None:
            return set()
        return set(self.app_names[histories.known[row].indices]) | histories.unknown.get(user_id, set())

    def _scores(self, histories: UserHistories, rows: np.ndarray) -> np.ndarray:
        """Blended scores (users x apps) for the given history rows; downloaded apps at -inf."""
        history = histories.known[rows]
        scores = (history @ self.similarity).toarray()  # co-occurrence, then scaled to 0..1 per user
        peak = scores.max(axis=1, keepdims=True, initial=0.0)
        np.divide(scores, peak, out=scores, where=peak > 0)
        scores *= self.w_cooccurrence
        category = histories.category_share[rows][:, self.app_cat]
        category *= self.popularity_in_category * self.w_category
        scores += category
        scores += 1e-6 * self.popularity / max(self.popularity.max(initial=0.0), 1.0)  # ties to the more popular
        scores[np.repeat(np.arange(len(rows)), np.diff(history.indptr)), history.indices] = -np.inf
        return scores

    def _top(self, scores: np.ndarray, n: int) -> list[np.ndarray]:
        """Per row, the columns of the n best finite scores, best first, equal scores by app name."""
        k = min(n, scores.shape[1])
        if k == 0:
            return [np.array([], dtype=np.int64) for _ in scores]
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # each row's k-th best score
        out = []
        for row, threshold in zip(scores, kth):
            candidates = np.flatnonzero((row >= threshold) & np.isfinite(row))
            out.append(candidates[np.lexsort((self.app_names[candidates], -row[candidates]))][:n])
        return out

    def _charts_for(self, histories: UserHistories, user_id: int, downloaded: set[str], n: int) -> list[dict[str, Any]]:
        """Charts of the user's categories (by share), then the overall charts, then popularity."""
        picks: list[str] = []
        row = histories.user_index.get(user_id)
        if row is not None:
            shares = histories.category_share[row]
            for ci in np.argsort(-shares, kind="stable"):
                if shares[ci] <= 0:
                    break
                picks.extend(self.charts_by_category.get(self.categories[ci], []))
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

    def recommend(self, histories: UserHistories, user_ids: Iterable[int], n: int = TOP_N,
                  chunk: int = 256) -> list[Recommendation]:
        """Top `n` new apps for each of `user_ids`; a user absent from `histories` gets the charts."""
        user_ids = [int(u) for u in user_ids]
        index, counts = histories.user_index, histories.app_counts
        out: dict[int, Recommendation] = {}
        rich = [u for u in user_ids if u in index and counts[index[u]] >= self.min_history]
        for start in range(0, len(rich), chunk):
            block = rich[start:start + chunk]
            scores = self._scores(histories, np.array([index[u] for u in block]))
            for user_id, row_scores, top in zip(block, scores, self._top(scores, n)):
                apps = [{"app": str(self.app_names[i]), "category": str(self.app_category[i]),
                         "score": round(float(row_scores[i]), 6)} for i in top]
                if len(apps) < n:  # a tiny catalogue: top up from the charts
                    have = self.downloaded(histories, user_id) | {a["app"] for a in apps}
                    apps += self._charts_for(histories, user_id, have, n - len(apps))
                out[user_id] = Recommendation(user_id, apps, METHOD_COOCCURRENCE)
        for user_id in user_ids:
            if user_id not in out:
                charts = self._charts_for(histories, user_id, self.downloaded(histories, user_id), n)
                out[user_id] = Recommendation(user_id, charts, METHOD_CHARTS)
        return [out[u] for u in user_ids]

    def most_popular(self, downloaded: set[str], n: int = TOP_N) -> list[str]:
        """The baseline: the most downloaded apps not in `downloaded`."""
        picks = []
        for i in self.global_order:
            if self.app_names[i] not in downloaded:
                picks.append(str(self.app_names[i]))
                if len(picks) == n:
                    break
        return picks


class Recommender:
    """A model fitted on (user, app) rows together with those users' histories: what the full
    refresh and the offline evaluation score."""

    def __init__(self, user_apps: pd.DataFrame, charts: pd.DataFrame, **params: Any) -> None:
        self.user_apps = user_apps
        self.model = RecommenderModel.fit(user_apps, charts, **params)
        self.histories = self.model.histories(user_apps)

    @property
    def user_ids(self) -> np.ndarray:
        return self.histories.user_ids

    def recommend(self, user_ids: Iterable[int], n: int = TOP_N) -> list[Recommendation]:
        return self.model.recommend(self.histories, user_ids, n)

    def downloaded(self, user_id: int) -> set[str]:
        return self.model.downloaded(self.histories, user_id)

    def most_popular(self, user_id: int, n: int = TOP_N) -> list[str]:
        return self.model.most_popular(self.downloaded(user_id), n)


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
    return charts[CHART_COLUMNS]


def fit_from_warehouse(engine: sa.Engine) -> Recommender:
    user_apps = load_user_apps(engine)
    return Recommender(user_apps, load_charts(engine, user_apps))


# -- the saved model -------------------------------------------------------------------------------
# The last model read or written, per (endpoint, bucket): its ETag and the model. A reader sends
# the ETag with GetObject and reuses its copy on 304, so a long-lived process downloads the model
# once per refit, not once per refresh.
_models: dict[tuple[str, str], tuple[str, RecommenderModel]] = {}


def _cache_key(s3: Any, bucket: str) -> tuple[str, str]:
    return s3.meta.endpoint_url, bucket


def save_model(s3: Any, bucket: str, model: RecommenderModel) -> str:
    """Write the model at `layout.RECOMMENDER_MODEL_KEY` (replacing the previous fit); its s3:// URI."""
    response = s3.put_object(Bucket=bucket, Key=layout.RECOMMENDER_MODEL_KEY, Body=model.to_bytes(),
                             ContentType="application/octet-stream")
    _models[_cache_key(s3, bucket)] = (response["ETag"], model)
    return f"s3://{bucket}/{layout.RECOMMENDER_MODEL_KEY}"


def load_model(s3: Any, bucket: str) -> RecommenderModel | None:
    """The saved model (None if none was saved yet), downloaded only when its ETag changed."""
    key = _cache_key(s3, bucket)
    cached = _models.get(key)
    try:
        response = aws.get_object_if_changed(s3, bucket, layout.RECOMMENDER_MODEL_KEY, cached[0] if cached else None)
    except ClientError as exc:
        if aws.is_missing(exc):
            _models.pop(key, None)
            return None
        raise
    if response is None:
        return cached[1]
    model = RecommenderModel.from_bytes(response["Body"].read())
    _models[key] = (response["ETag"], model)
    return model


# -- refreshes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FullRefresh:
    """What `refresh_all_recommendations` did: every user's items from a model fitted and saved now."""

    items_written: int
    recommender: Recommender
    recommendations: list[Recommendation]
    model_uri: str

    @property
    def model(self) -> RecommenderModel:
        return self.recommender.model


@dataclass(frozen=True)
class TouchedRefresh:
    """What `refresh_touched_users` did, for the caller's metadata and logs."""

    items_written: int
    users: int
    model_fitted_at: dt.datetime | None  # None when no user was given (no model was loaded)
    model_fitted_now: bool  # no model was saved yet, so this refresh fitted and saved one
    unknown_apps: int  # distinct apps of these users the model has never seen (new since its fit)

    def model_age_seconds(self, now: dt.datetime | None = None) -> float | None:
        if self.model_fitted_at is None:
            return None
        return round(((now or dt.datetime.now(dt.timezone.utc)) - self.model_fitted_at).total_seconds(), 3)

    def as_metadata(self) -> dict[str, Any]:
        return {"recommendations_written": self.items_written, "recommendation_users": self.users,
                "recommender_fitted_at": self.model_fitted_at.isoformat() if self.model_fitted_at else None,
                "recommender_age_seconds": self.model_age_seconds(),
                "recommender_fitted_now": self.model_fitted_now, "apps_newer_than_recommender": self.unknown_apps}


def refresh_all_recommendations(engine: sa.Engine, s3: Any, bucket: str, dynamodb: Any, table: str) -> FullRefresh:
    """Fit on the whole warehouse, save the model for the incremental refreshes, write every user's items."""
    recommender = fit_from_warehouse(engine)
    uri = save_model(s3, bucket, recommender.model)
    recs = recommender.recommend(recommender.user_ids.tolist())
    return FullRefresh(write_recommendations(dynamodb, table, recs), recommender, recs, uri)


def refresh_touched_users(engine: sa.Engine, s3: Any, bucket: str, dynamodb: Any, table: str,
                          user_ids: Iterable[int]) -> TouchedRefresh:
    """Rewrite the REC items of `user_ids` (e.g. the users a drained range touched) with the saved
    model and only their own rows, so the cost follows the users, not the warehouse.

    The warehouse must hold their new events already. With no model saved yet, one is fitted on
    the whole warehouse and saved (once). Apps newer than the model count as downloaded and in
    the user's categories, but are neither recommended nor used for co-occurrence until the next
    full refit (`user_recommendations`) learns them; `unknown_apps` says how many there were.
    """
    ids = sorted({int(u) for u in user_ids})
    if not ids:
        return TouchedRefresh(0, 0, None, False, 0)
    model = load_model(s3, bucket)
    fitted_now = model is None
    if model is None:
        model = fit_from_warehouse(engine).model
        save_model(s3, bucket, model)
    histories = model.histories(load_user_apps(engine, ids))
    written = write_recommendations(dynamodb, table, model.recommend(histories, ids))
    return TouchedRefresh(written, len(ids), model.fitted_at, fitted_now, len(histories.unknown_apps))


