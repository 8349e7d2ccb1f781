"""Benchmark: forgetting one user among N events vs a full scan of the same data, at two sizes.

    /tmp/venv/bin/python bench/bench_forget.py [--sizes 25000,100000] [--batch-share 0.2]

Per size, on a fresh emulator and home: N events over 30 days and 2,000 users, a share of them as
batch days (client drops through landing_batch, curated_batch, downloads_batch and
lake_downloads_batch, users 1..200), the rest posted to Kinesis and drained by the real drain
(raw archive, DynamoDB, warehouse) and committed to the lake table; marts built and the
recommender fitted. Not timed. Then, timed:
- the baseline, a full scan: the proof (`verify.traces`) for a user who is not there, which reads
  every object, every table data file, the DynamoDB partition and every warehouse table once;
- forgetting one user who is in the stream and the batch on most days, as `appdata forget`
  does: `log.file_request`, then `requests.carry_out` on `erasure_places` (erase, prove, log).
carry_out ends with the proof, so forget >= scan by construction: each size also prints the seconds
of forget spent in the marts rebuild, the recommender refit and the proof.
The LAST line: forget/scan at the largest size, and how each grew between the sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BenchEnvironment, bench_events  # noqa: E402

from appdata import aws  # noqa: E402

USERS = 2_000
DAYS = 30
BATCH_DAYS = 10
FORGOTTEN = 7  # a batch user (1..200) who also streams: in every place
ABSENT = 9_999_999
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def stream_events(n: int, tag: str, today: dt.date) -> list[dict]:
    """`n` events, user 1 + (i * 7919) % USERS (every user, interleaved), each user's events on
    consecutive days of the last DAYS (a user's k-th event on day k + i mod DAYS)."""
    events = bench_events(n, tag)
    for i, event in enumerate(events):
        event["user_id"] = 1 + (i * 7919) % USERS
        event["download_date"] = (today - dt.timedelta(days=(i + 11 * (i // USERS)) % DAYS)).isoformat()
    return events


def put_all(kinesis, stream: str, events: list[dict]) -> None:
    """The project's own PutRecords (`appdata.aws.put_records`: 500 a call, failed entries again)."""
    outcome = aws.put_records(kinesis, stream, events, partition_key="user_id")
    if outcome.failed:
        raise RuntimeError(f"{len(outcome.failed)} records not put: {outcome.failed[:3]}")


def load_batch(resources: dict, first: dt.date, last: dt.date, rows_per_day: int) -> None:
    """The batch days as a single-run backfill makes them: client drops, landing, ETL, warehouse, table."""
    import dagster as dg

    from appdata.defs.batch.assets import curated_batch, downloads_batch, landing_batch
    from appdata.defs.lake.assets import lake_downloads_batch
    from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_app_batch_client_data, users_batch

    assets = [playstore_apps_raw, playstore_apps, users_batch, users_app_batch_client_data, landing_batch,
              curated_batch, downloads_batch, lake_downloads_batch]
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(assets[:3], instance=instance, resources=resources, run_config=QUIET).success
        result = dg.materialize(
            assets, selection=assets[3:], instance=instance, resources=resources,
            tags={"dagster/asset_partition_range_start": first.isoformat(),
                  "dagster/asset_partition_range_end": last.isoformat()},
            run_config={"ops": {"users_app_batch_client_data": {"config": {"rows_per_day": rows_per_day}}}, **QUIET})
        assert result.success


def load(resources: dict, n: int, batch_share: float) -> dict[str, int]:
    """N events in every store; returns what each holds."""
    import sqlalchemy as sa

    from appdata.analytics.marts import build_all_marts
    from appdata.analytics.recommend import refresh_all_recommendations
    from appdata.privacy.erase import object_keys
    from appdata.privacy.forgotten import ForgottenUsers
    from appdata.stream.consumer import Sinks, drain_until_caught_up
    from appdata.stream.leases import LeaseTable
    from appdata.stream.table_writer import sync_stream_table

    today = dt.date.today()
    batch_rows = int(n * batch_share) // BATCH_DAYS
    load_batch(resources, today - dt.timedelta(days=DAYS - 1), today - dt.timedelta(days=DAYS - BATCH_DAYS),
               batch_rows)
    s3, bucket = resources["s3"].get_client(), resources["s3"].bucket
    kinesis, stream = resources["kinesis"].get_client(), resources["kinesis"].stream_name
    dynamodb = resources["dynamodb"].get_client()
    leases = LeaseTable(dynamodb, resources["dynamodb"].lease_table_name, stream)
    put_all(kinesis, stream, stream_events(n - batch_rows * BATCH_DAYS, f"forget-{n}", today))
    drain_until_caught_up(kinesis=kinesis, stream=stream, leases=leases, owner="bench-forget",
                          sinks=Sinks(s3=s3, bucket=bucket, dynamodb=dynamodb, table=resources["dynamodb"].table_name,
                                      warehouse=resources["warehouse"].connect))
    sync_stream_table(resources["lake_table"].open, kinesis, stream, leases, ForgottenUsers(s3, bucket))
    with resources["warehouse"].connect() as engine:
        build_all_marts(engine)
        refresh_all_recommendations(engine, s3, bucket, dynamodb, resources["dynamodb"].table_name)
        with engine.connect() as conn:
            held = {name: conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one()
                    for name in ("downloads_stream", "downloads_batch")}
            held["forgotten user's rows"] = sum(conn.execute(sa.text(
                f"SELECT COUNT(*) FROM {name} WHERE user_id = {FORGOTTEN}")).scalar_one()
                for name in ("downloads_stream", "downloads_batch"))
            held["forgotten user's days"] = conn.execute(sa.text(
                f"SELECT COUNT(DISTINCT download_date) FROM (SELECT download_date FROM downloads_stream WHERE user_id "
                f"= {FORGOTTEN} UNION ALL SELECT download_date FROM downloads_batch WHERE user_id = {FORGOTTEN}) d"
            )).scalar_one()
    held["objects"] = sum(1 for _ in object_keys(s3, bucket))
    held["table rows"] = resources["lake_table"].open().scan(selected_fields=("event_id",)).to_arrow().num_rows
    return held


def timed(places):
    """`places` whose rebuilds and proofs add their seconds to the returned counter."""
    import dataclasses
    from collections import Counter

    from appdata.privacy import requests

    spent: Counter = Counter()

    def clocked(name, work):
        def run(*args):
            started = time.monotonic()
            try:
                return work(*args)
            finally:
                spent[name] += time.monotonic() - started
        return run

    proof = requests.traces_of

    def traces_of(user_id, places, erased_at):
        spent["proofs"] += 1
        return clocked("proof", proof)(user_id, places, erased_at)

    requests.traces_of = traces_of  # carry_out's proof, counted apart
    return dataclasses.replace(places, rebuild_marts=clocked("marts", places.rebuild_marts),
                               refit_recommender=clocked("recommender", places.refit_recommender)), spent


def measure(n: int, batch_share: float) -> dict:
    from appdata.defs.privacy import erasure_places
    from appdata.privacy import log, requests

    bench = BenchEnvironment(f"forget-{n // 1000}k")
    try:
        resources = bench.provision_all()
        started = time.monotonic()
        held = load(resources, n, batch_share)
        loaded = time.monotonic() - started
        with resources["warehouse"].connect() as engine:
            places, spent = timed(erasure_places(resources["s3"], resources["dynamodb"], resources["lake_table"],
                                                 engine))
            started = time.monotonic()
            absent = requests.traces_of(ABSENT, places, None)
            scan = time.monotonic() - started
            assert absent == {}, absent
            spent.clear()
            started = time.monotonic()
            request = log.file_request(places.s3, places.bucket, FORGOTTEN, "bench")
            outcome = requests.carry_out(request.request_id, places)
            forget = time.monotonic() - started
            assert outcome.status == "done", outcome
    finally:
        bench.close()
    print(f"{n:>7,} events: loaded in {loaded:5.1f}s (not timed): {held}")
    print(f"{n:>7,} events: full scan {scan:6.2f}s   forget one user {forget:6.2f}s   "
          f"ratio {forget / scan:.2f}")
    print(f"{n:>7,} events: of forget, marts {spent['marts']:.2f}s, recommender {spent['recommender']:.2f}s, "
          f"{spent['proofs']} proof(s) {spent['proof']:.2f}s; removed {outcome.removed}")
    return {"n": n, "scan": scan, "forget": forget}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,100000")
    parser.add_argument("--batch-share", type=float, default=0.2, help="share of the events loaded as batch days")
    args = parser.parse_args()
    runs = [measure(int(size), args.batch_share) for size in args.sizes.split(",")]
    small, large = runs[0], runs[-1]
    if len(runs) > 1:
        grew = large["n"] / small["n"]
        print(f"growth {small['n']:,} -> {large['n']:,} events (x{grew:.0f}): "
              f"full scan x{large['scan'] / small['scan']:.2f}, forget x{large['forget'] / small['forget']:.2f}")
    print(f"ratio forget/full scan at {large['n']:,} events = {large['forget'] / large['scan']:.2f}")


if __name__ == "__main__":
    main()
