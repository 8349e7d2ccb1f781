"""Incremental recommendation refresh of one drained range, with 50,000 and 5,000,000 rows of history.

Run: .venv/bin/python bench/bench_recommend_refresh.py [--sizes 50000 5000000] [--repeats 7]

For each size, an embedded DuckDB warehouse gets that many download rows (`downloads_batch`)
over a year, generated with numpy straight into DuckDB: the warehouse grows by users (20
downloads each on average, lognormal activity), each user prefers 3 categories (80% of their
downloads), apps within a category follow a Zipf law over the catalogue's installs order. The
model is fitted on the whole warehouse and saved to S3 once per size (timed, not in the ratio).
Then each repetition, the sizes taking turns so both see the same machine load, lands a
1,000-event range in `downloads_stream`, as a drain does: events of the 1,000 stream-client
users (the first 1,000 users, whose histories follow the same law at both sizes), 1% of them
downloads of apps newer than the model, and times
`refresh_touched_users` for the range's users (model from S3 by ETag, their rows from the
warehouse, scoring, REC items written to DynamoDB on the emulator server). A cold refresh (model
downloaded) is shown apart; the median over repetitions is the warm, steady-state figure. Each
repetition also runs the refresh's steps one by one on another range, to show where time goes.

The hit rate at 10 (latest download held out) and the most-popular baseline's are measured on
the smallest size, with the model's neighbour limit and without it. The LAST line is time(largest) / time(smallest); the target is <= 1.5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench._common import BenchEnvironment  # noqa: E402

DOWNLOADS_PER_USER = 20
FAVOURITE_CATEGORIES = 3
FAVOURITE_SHARE = 0.8
STREAM_USERS = 1000
RANGE_EVENTS = 1000
NEW_APP_SHARE = 0.01
HISTORY_DAYS = 365
LAST_HISTORY_DAY = dt.date(2024, 12, 31)
FIRST_USER = 100_001


class Population:
    """Users, their tastes and activity, and the catalogue's per-category Zipf laws, for one size."""

    def __init__(self, apps, n_users: int, seed: int = 7):
        self.rng = np.random.default_rng(seed)
        self.categories = sorted(apps["category"].unique())
        self.n_users = n_users
        sizes = apps["category"].value_counts().reindex(self.categories).to_numpy(dtype=float)
        self.category_weights = sizes / sizes.sum()
        # The same seed draws the same first users at every size: the stream users' law is shared.
        self.activity = self.rng.lognormal(0.0, 1.0, n_users)
        self.favourites = self.rng.choice(len(self.categories), size=(n_users, FAVOURITE_CATEGORIES),
                                          p=self.category_weights)
        category = apps["category"].to_numpy()
        installs = apps["installs"].to_numpy()
        self.members, self.cumulative = [], []
        for name in self.categories:
            members = np.flatnonzero(category == name)
            members = members[np.argsort(-installs[members], kind="stable")]
            weights = 1.0 / np.arange(1, len(members) + 1)
            self.members.append(members)
            self.cumulative.append(np.cumsum(weights) / weights.sum())

    def events(self, rows: int, users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(user index, catalogue row) of `rows` downloads, by activity over `users` (default all)."""
        pool = np.arange(self.n_users) if users is None else users
        weights = self.activity[pool] / self.activity[pool].sum()
        user = pool[self.rng.choice(len(pool), size=rows, p=weights)]
        favourite = self.favourites[user, self.rng.integers(0, FAVOURITE_CATEGORIES, rows)]
        other = self.rng.choice(len(self.categories), size=rows, p=self.category_weights)
        category = np.where(self.rng.random(rows) < FAVOURITE_SHARE, favourite, other)
        app = np.empty(rows, dtype=np.int64)
        for index in range(len(self.categories)):
            chosen = category == index
            picks = np.searchsorted(self.cumulative[index], self.rng.random(int(chosen.sum())))
            app[chosen] = self.members[index][np.minimum(picks, len(self.members[index]) - 1)]
        return user, app


def load_events(engine: sa.Engine, table: str, apps, users: np.ndarray, rows: np.ndarray, days: np.ndarray,
                tag: str, new_apps: np.ndarray | None = None) -> None:
    """INSERT the downloads straight from Arrow: catalogue columns joined in DuckDB, the rest constant."""
    from appdata.contract.schema import FIELDS

    events = pa.table({"n": np.arange(len(users)), "user_id": users + FIRST_USER, "row": rows,
                       "download_date": pa.array(days.astype("datetime64[D]")),
                       "new_app": pa.array(new_apps if new_apps is not None else [None] * len(users), pa.string())})
    catalogue = pa.Table.from_pandas(apps.reset_index(drop=True).assign(row=np.arange(len(apps))))
    fixed = {"event_id": f"'{tag}-' || CAST(e.n AS VARCHAR)", "user_id": "e.user_id", "name": "'Bench User'",
             "location": "'Ohio'", "age": "30", "app": "COALESCE(e.new_app, c.app)", "minutes_spent": "10",
             "download_date": "e.download_date"}
    columns = [f.name for f in FIELDS]
    select = ", ".join(fixed.get(name, f"c.{name}") for name in columns)
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        raw.register("bench_events", events)
        raw.register("bench_catalogue", catalogue)
        try:
            conn.exec_driver_sql(f'INSERT INTO "{table}" ({", ".join(columns)}) SELECT {select} '
                                 "FROM bench_events e JOIN bench_catalogue c ON c.row = e.row ORDER BY e.n")
        finally:
            raw.unregister("bench_events")
            raw.unregister("bench_catalogue")


def history_days(rng: np.random.Generator, rows: int) -> np.ndarray:
    first = np.datetime64(LAST_HISTORY_DAY - dt.timedelta(days=HISTORY_DAYS - 1))
    return np.sort(first + rng.integers(0, HISTORY_DAYS, rows))  # landed in day order, as loads do


class Size:
    """One warehouse size: its DuckDB file, population and model (in a bucket of its own, so the
    sizes can take turns and share the machine's load alike)."""

    def __init__(self, resources: dict, home: Path, apps, rows: int):
        from appdata.analytics import marts
        from appdata.warehouse.loader import create_schema

        self.rows, self.apps = rows, apps
        self.s3, self.bucket = resources["s3"].get_client(), f"{resources['s3'].bucket}-{rows}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.dynamodb, self.table = resources["dynamodb"].get_client(), resources["dynamodb"].table_name
        self.engine = sa.create_engine(f"duckdb:///{home / f'warehouse-{rows}.duckdb'}", poolclass=sa.pool.NullPool)
        started = time.perf_counter()
        create_schema(self.engine)
        self.population = Population(apps, max(rows // DOWNLOADS_PER_USER, STREAM_USERS))
        users, catalogue_rows = self.population.events(rows)
        load_events(self.engine, "downloads_batch", apps, users, catalogue_rows,
                    history_days(self.population.rng, rows), "h")
        marts.build_mart(self.engine, "mart_charts")
        self.setup_s = time.perf_counter() - started
        self.timings: list[float] = []
        self.parts: dict[str, list[float]] = {"model check": [], "warehouse read": [], "scoring": [], "DynamoDB write": []}
        self.touched: list[int] = []
        self.unknown = 0
        self.ranges = 0

    def fit_and_save(self, evaluate_quality: bool) -> None:
        from appdata.analytics import recommend
        from appdata.contract import layout

        started = time.perf_counter()
        recommender = recommend.fit_from_warehouse(self.engine)
        self.fit_s = time.perf_counter() - started
        started = time.perf_counter()
        recommend.save_model(self.s3, self.bucket, recommender.model)
        self.save_s = time.perf_counter() - started
        self.model_bytes = self.s3.head_object(Bucket=self.bucket, Key=layout.RECOMMENDER_MODEL_KEY)["ContentLength"]
        self.similarity_pairs = recommender.model.similarity.nnz
        self.evaluation = recommend.evaluate(recommender.user_apps) if evaluate_quality else None
        self.unpruned = recommend.evaluate(recommender.user_apps, max_neighbours=10**9) if evaluate_quality else None

    def land_range(self) -> list[int]:
        """A drained range's 1,000 events in downloads_stream; returns its users."""
        user, catalogue_row = self.population.events(RANGE_EVENTS, np.arange(STREAM_USERS))
        new_apps = np.where(self.population.rng.random(RANGE_EVENTS) < NEW_APP_SHARE,
                            np.char.add("Bench New App ", (np.arange(RANGE_EVENTS) % 7).astype(str)), None)
        self.ranges += 1
        day = np.datetime64(LAST_HISTORY_DAY + dt.timedelta(days=self.ranges))
        load_events(self.engine, "downloads_stream", self.apps, user, catalogue_row, np.full(RANGE_EVENTS, day),
                    f"r{self.ranges}", new_apps=new_apps)
        return (user + FIRST_USER).tolist()

    def refresh(self) -> float:
        from appdata.analytics import recommend

        users = self.land_range()
        started = time.perf_counter()
        done = recommend.refresh_touched_users(self.engine, self.s3, self.bucket, self.dynamodb, self.table, users)
        elapsed = time.perf_counter() - started
        assert done.items_written == done.users == len(set(users)) and not done.model_fitted_now
        self.touched.append(done.users)
        self.unknown = max(self.unknown, done.unknown_apps)
        return elapsed

    def breakdown(self) -> None:
        """Where a refresh's time goes: its steps run one by one for another range."""
        from appdata.analytics import recommend

        users = self.land_range()
        marks = [time.perf_counter()]
        model = recommend.load_model(self.s3, self.bucket)
        marks.append(time.perf_counter())
        user_apps = recommend.load_user_apps(self.engine, users)
        marks.append(time.perf_counter())
        recs = model.recommend(model.histories(user_apps), sorted(set(users)))
        marks.append(time.perf_counter())
        recommend.write_recommendations(self.dynamodb, self.table, recs)
        marks.append(time.perf_counter())
        for name, start, end in zip(self.parts, marks, marks[1:]):
            self.parts[name].append(end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 5_000_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    env = BenchEnvironment("recs")
    try:
        from appdata.analytics import recommend
        from appdata.config import Settings
        from appdata.defs.resources import build_resources
        from appdata.local.provision import ensure_bucket, ensure_table
        from appdata.sources.catalogue import clean_catalogue, load_catalogue

        resources = build_resources(Settings.from_env())
        ensure_bucket(resources["s3"])
        ensure_table(resources["dynamodb"])
        apps, _ = clean_catalogue(load_catalogue(None, seed=7)[0])
        sizes = []
        for index, rows in enumerate(sorted(args.sizes)):
            size = Size(resources, env.home, apps, rows)
            size.fit_and_save(evaluate_quality=index == 0)
            sizes.append(size)
            print(f"{rows:>9,} rows, {size.population.n_users:,} users: generated and loaded in {size.setup_s:.1f} s; "
                  f"model fitted in {size.fit_s:.2f} s, saved in {size.save_s:.2f} s "
                  f"({size.model_bytes / 1e6:.1f} MB, {size.similarity_pairs:,} similar pairs)", flush=True)
            if size.evaluation:
                evaluation = size.evaluation
                print(f"  quality at {rows:,} rows: hit rate at 10 {evaluation.hit_rate:.4f} vs most popular "
                      f"{evaluation.baseline_hit_rate:.4f} over {evaluation.users:,} users "
                      f"({evaluation.hits} vs {evaluation.baseline_hits} hits; every neighbour kept: "
                      f"{size.unpruned.hit_rate:.4f}, {size.unpruned.hits} hits)", flush=True)
        cold = {}
        for size in sizes:  # a fresh process: the model is downloaded once
            recommend._models.clear()
            cold[size.rows] = size.refresh()
        for _ in range(args.repeats):  # the sizes take turns, so both see the same machine load
            for size in sizes:
                size.timings.append(size.refresh())
                size.breakdown()
        for size in sizes:
            parts = ", ".join(f"{name} {statistics.median(values):.3f}" for name, values in size.parts.items())
            print(f"{size.rows:>9,} rows: refresh of a {RANGE_EVENTS:,}-event range ({statistics.median(size.touched):.0f} "
                  f"users, up to {size.unknown} apps newer than the model): cold {cold[size.rows]:.3f} s, "
                  f"median {statistics.median(size.timings):.3f} s over {args.repeats} "
                  f"[{', '.join(f'{t:.3f}' for t in size.timings)}]; steps (median s): {parts}", flush=True)
        small, large = sizes[0], sizes[-1]
        ratio = statistics.median(large.timings) / statistics.median(small.timings)
        print(f"ratio refresh time {large.rows:,} / {small.rows:,} rows: {ratio:.2f} (target <= 1.5)")
    finally:
        env.close()


if __name__ == "__main__":
    main()
