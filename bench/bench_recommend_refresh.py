"""Incremental recommendation refresh of one drained range, with 50,000 and 5,000,000 rows of history.

Run: .venv/bin/python bench/bench_recommend_refresh.py [--sizes 50000 5000000] [--repeats 5]

For each size, an embedded DuckDB warehouse gets that many download rows (`downloads_batch`)
over a year, generated with numpy straight into DuckDB: the warehouse grows by users (20
downloads each on average, lognormal activity), each user prefers 3 categories (80% of their
downloads), apps within a category follow a Zipf law over the catalogue's installs order. The
model is fitted on the whole warehouse and saved to S3 once per size (timed, not in the ratio).
Then each repetition lands a 1,000-event range in `downloads_stream`, as a drain does: events of
the 1,000 stream-client users (the first 1,000 users, whose histories follow the same law at
both sizes), 1% of them downloads of apps newer than the model, and times
`refresh_touched_users` for the range's users (model from S3 by ETag, their rows from the
warehouse, scoring, REC items written to DynamoDB on the emulator server). A cold refresh (model
downloaded) is shown apart; the median over repetitions is the warm, steady-state figure.

The hit rate at 10 (latest download held out) and the most-popular baseline's are measured on
the smallest size. The LAST line is time(largest) / time(smallest); the target is <= 1.5.
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


def run_size(env_resources: dict, home: Path, apps, rows: int, repeats: int, evaluate_quality: bool) -> dict:
    from appdata.analytics import marts, recommend
    from appdata.contract import layout
    from appdata.warehouse.loader import create_schema

    s3, bucket = env_resources["s3"].get_client(), env_resources["s3"].bucket
    dynamodb, table = env_resources["dynamodb"].get_client(), env_resources["dynamodb"].table_name
    engine = sa.create_engine(f"duckdb:///{home / f'warehouse-{rows}.duckdb'}", poolclass=sa.pool.NullPool)
    create_schema(engine)
    out: dict = {"rows": rows}

    started = time.perf_counter()
    population = Population(apps, max(rows // DOWNLOADS_PER_USER, STREAM_USERS))
    users, catalogue_rows = population.events(rows)
    load_events(engine, "downloads_batch", apps, users, catalogue_rows, history_days(population.rng, rows), "h")
    marts.build_mart(engine, "mart_charts")
    out["users"] = population.n_users
    out["setup_s"] = time.perf_counter() - started

    started = time.perf_counter()
    recommender = recommend.fit_from_warehouse(engine)
    out["fit_s"] = time.perf_counter() - started
    started = time.perf_counter()
    recommend.save_model(s3, bucket, recommender.model)
    out["save_s"] = time.perf_counter() - started
    out["model_bytes"] = s3.head_object(Bucket=bucket, Key=layout.RECOMMENDER_MODEL_KEY)["ContentLength"]
    out["similarity_pairs"] = recommender.model.similarity.nnz
    if evaluate_quality:
        out["evaluation"] = recommend.evaluate(recommender.user_apps)
    del recommender

    stream_users = np.arange(STREAM_USERS)
    timings, touched, unknown = [], [], []
    for repeat in range(repeats + 1):  # the first one cold: the model is downloaded
        user, catalogue_row = population.events(RANGE_EVENTS, stream_users)
        new_apps = np.where(population.rng.random(RANGE_EVENTS) < NEW_APP_SHARE,
                            np.char.add("Bench New App ", (np.arange(RANGE_EVENTS) % 7).astype(str)), None)
        day = np.datetime64(LAST_HISTORY_DAY + dt.timedelta(days=1 + repeat))
        load_events(engine, "downloads_stream", apps, user, catalogue_row, np.full(RANGE_EVENTS, day), f"r{repeat}",
                    new_apps=new_apps)
        if repeat == 0:
            recommend._models.clear()  # as a fresh process
        started = time.perf_counter()
        done = recommend.refresh_touched_users(engine, s3, bucket, dynamodb, table, (user + FIRST_USER).tolist())
        elapsed = time.perf_counter() - started
        assert done.items_written == done.users == len(set(user.tolist())) and not done.model_fitted_now
        if repeat == 0:
            out["cold_s"] = elapsed
        else:
            timings.append(elapsed)
            touched.append(done.users)
            unknown.append(done.unknown_apps)
    out["refresh_s"] = statistics.median(timings)
    out["refresh_all_s"] = timings
    out["touched_users"] = statistics.median(touched)
    out["unknown_apps"] = max(unknown)
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 5_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    env = BenchEnvironment("recs")
    try:
        from appdata.config import Settings
        from appdata.defs.resources import build_resources
        from appdata.local.provision import ensure_bucket, ensure_table
        from appdata.sources.catalogue import clean_catalogue, load_catalogue

        resources = build_resources(Settings.from_env())
        ensure_bucket(resources["s3"])
        ensure_table(resources["dynamodb"])
        apps, _ = clean_catalogue(load_catalogue(None, seed=7)[0])
        results = []
        for index, rows in enumerate(sorted(args.sizes)):
            result = run_size(resources, env.home, apps, rows, args.repeats, evaluate_quality=index == 0)
            results.append(result)
            print(f"{rows:>9,} rows, {result['users']:,} users: setup {result['setup_s']:.1f} s; "
                  f"fit {result['fit_s']:.2f} s + save {result['save_s']:.2f} s "
                  f"({result['model_bytes'] / 1e6:.1f} MB, {result['similarity_pairs']:,} similar pairs); "
                  f"refresh of a {RANGE_EVENTS:,}-event range ({result['touched_users']:.0f} users, "
                  f"{result['unknown_apps']} apps newer than the model): cold {result['cold_s']:.3f} s, "
                  f"median {result['refresh_s']:.3f} s over {args.repeats} "
                  f"[{', '.join(f'{t:.3f}' for t in result['refresh_all_s'])}]", flush=True)
            if "evaluation" in result:
                evaluation = result["evaluation"]
                print(f"  quality at {rows:,} rows: hit rate at 10 {evaluation.hit_rate:.4f} vs most popular "
                      f"{evaluation.baseline_hit_rate:.4f} over {evaluation.users:,} users "
                      f"({evaluation.hits} vs {evaluation.baseline_hits} hits)", flush=True)
        small, large = results[0], results[-1]
        print(f"ratio refresh time {large['rows']:,} / {small['rows']:,} rows: "
              f"{large['refresh_s'] / small['refresh_s']:.2f} (target <= 1.5)")
    finally:
        env.close()


if __name__ == "__main__":
    main()
