"""Benchmark: one partition of 1,000,000 rows, landing CSV -> curated Parquet -> warehouse.

The pipeline's two steps (curated_batch: download, validate every row, write Parquet and dead
letters, upload; downloads_batch: read the Parquet back from S3, one DuckDB transaction) run in a
child process of their own, which reports its peak RSS. The baseline is DuckDB converting the
same CSV (already local) to Parquet on its own, also in its own process. The client data and the
landing CSV are produced first (not timed), with APPDATA_BATCH_ROWS_PER_DAY=1000000.

    /tmp/v/bin/python bench/bench_batch_million.py

Targets: ratio <= 2, peak RSS <= 1.5 GB. The last line is the ratio.
"""

import datetime as dt
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import dagster as dg

ROWS = 1_000_000
DAY = dt.date(2020, 3, 1)

PIPELINE_CHILD = textwrap.dedent("""
    import datetime as dt, json, resource, sys, time
    import dagster as dg
    from appdata.local import batch_demo as demo
    from appdata.config import Settings
    from appdata.defs.resources import build_resources
    day = dt.date.fromisoformat(sys.argv[1])
    started = time.monotonic()
    with dg.DagsterInstance.ephemeral() as instance:
        result = demo.materialize_range(day, day, build_resources(Settings.from_env()), instance=instance,
                                        selection=["curated_batch", "downloads_batch"])
        steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)}
    checks = {c.asset_key.to_user_string() + "." + c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    print(json.dumps({"wall": time.monotonic() - started, "steps": steps, "checks": checks,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

DUCKDB_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import duckdb
    started = time.monotonic()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_csv('{sys.argv[1]}')) TO '{sys.argv[2]}' (FORMAT parquet)")
    print(json.dumps({"seconds": time.monotonic() - started,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def _child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit("child failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import BenchEnvironment

    from appdata.batch import lake
    from appdata.local import batch_demo as demo
    from appdata.contract import layout

    bench = BenchEnvironment("million", {"APPDATA_BATCH_ROWS_PER_DAY": str(ROWS)})
    try:
        resources = bench.provision()
        started = time.monotonic()
        with dg.DagsterInstance.ephemeral() as scratch:
            demo.materialize_range(DAY, DAY, resources, instance=scratch,
                                   selection=["playstore_apps_raw", "playstore_apps", "users_batch",
                                              "users_app_batch_client_data", "landing_batch"])
        s3 = resources["s3"]
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "landing.csv"
            size = lake.download(s3.get_client(), s3.bucket, layout.landing_key(DAY), csv_path)
            print(f"setup: {ROWS:,} client rows and a {size / 1e6:.0f} MB landing CSV in "
                  f"{time.monotonic() - started:.1f}s (not timed)")
            duck = _child(DUCKDB_CHILD, str(csv_path), str(Path(tmp) / "duck.parquet"))
        pipeline = _child(PIPELINE_CHILD, DAY.isoformat())
        table = demo.stage_counts(__import__("appdata.config").config.Settings.from_env(), [DAY], resources)
    finally:
        bench.close()

    steps = pipeline["steps"]
    work = steps["curated_batch"] + steps["downloads_batch"]
    print(f"duckdb CSV -> Parquet alone:            {duck['seconds']:6.1f}s  peak RSS {duck['rss_mb']:6.0f} MB")
    print(f"pipeline steps (curated + warehouse):   {work:6.1f}s  "
          f"(curated_batch {steps['curated_batch']:.1f}s, downloads_batch {steps['downloads_batch']:.1f}s)")
    print(f"pipeline process wall (incl. imports):  {pipeline['wall']:6.1f}s  peak RSS {pipeline['rss_mb']:6.0f} MB "
          f"(target <= 1536 MB)")
    print(f"stages: {table[0]}; checks all green: {all(pipeline['checks'].values())}")
    print(f"ratio pipeline/duckdb = {work / duck['seconds']:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
