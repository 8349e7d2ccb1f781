"""Benchmark: a full-year (2020) single-run backfill of the batch assets vs a no-op asset.

Both are launched the way a data engineer would from the CLI (`dagster asset materialize
--partition-range 2020-01-01...2020-12-31 --config-json '{"execution": {"config": {"in_process": {}}}}'`,
one run each, steps in the run's process as the batch job runs them, on a local instance configured like
`appdata up`), so both pay the same process start, code loading and run bookkeeping; the
difference is the batch work itself: 366 client drops to S3, the ETL of 366 landing files and one
warehouse transaction. The client's own data for 2020 is generated first (not timed).

    /tmp/v/bin/python bench/bench_batch_backfill.py

Target: ratio <= 1.5. The last line is the ratio.
"""

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from appdata.defs.partitions import daily_partitions

FIRST, LAST = dt.date(2020, 1, 1), dt.date(2020, 12, 31)
BATCH = ["landing_batch", "curated_batch", "downloads_batch"]


@dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="bench")
def noop_daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The baseline: a daily asset that does nothing over the same window."""
    return dg.MaterializeResult(metadata={"partitions": len(context.partition_keys)})


def _definitions() -> dg.Definitions:
    from appdata.definitions import defs as appdata_defs

    return dg.Definitions.merge(appdata_defs, dg.Definitions(assets=[noop_daily]))


if __name__ != "__main__":  # loaded by `dagster asset materialize -f` as a code location
    defs = _definitions()


# Both runs execute their steps in the run's own process (the batch job's executor, see
# appdata/batch/schedules.py): one step process per asset costs a Python start and a code load each.
IN_PROCESS = '{"execution": {"config": {"in_process": {}}}}'


def _materialize_cli(selection: list[str]) -> float:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-f", str(Path(__file__).resolve()),
               "--select", ",".join(selection), "--partition-range", f"{FIRST}...{LAST}", "--config-json", IN_PROCESS]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{selection} failed")
    return elapsed


def _step_seconds(instance: dg.DagsterInstance) -> dict[str, float]:
    run = instance.get_runs(limit=1)[0]
    return {s.step_key: round(s.end_time - s.start_time, 2) for s in instance.get_run_step_stats(run.run_id)}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import BenchEnvironment

    from appdata.local import batch_demo as demo

    bench = BenchEnvironment("backfill")
    try:
        resources = bench.provision()
        started = time.monotonic()
        with dg.DagsterInstance.ephemeral() as scratch:
            demo.materialize_range(FIRST, LAST, resources, instance=scratch,
                                   selection=["playstore_apps_raw", "playstore_apps", "users_batch",
                                              "users_app_batch_client_data"])
        print(f"setup: client data for {FIRST}..{LAST} generated in {time.monotonic() - started:.1f}s (not timed)")

        instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
        noop = _materialize_cli(["noop_daily"])
        noop_steps = _step_seconds(instance)
        batch = _materialize_cli(BATCH)
        batch_steps = _step_seconds(instance)
        table = demo.stage_counts(__import__("appdata.config").config.Settings.from_env(),
                                  [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)], resources)
        problems = demo.reconcile(table)
        rows = sum(r["warehouse"] for r in table)
        instance.dispose()
    finally:
        bench.close()

    print(f"no-op asset, 366 partitions, one run (CLI):   {noop:6.1f}s   steps {noop_steps}")
    print(f"batch assets, 366 partitions, one run (CLI):  {batch:6.1f}s   steps {batch_steps}")
    print(f"rows loaded: {rows:,}; stages reconcile: {not problems} {problems[:3]}")
    print(f"ratio batch/no-op = {batch / noop:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
