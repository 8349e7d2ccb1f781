"""The README's backfill recipes, run as a user runs them, on the real emulator.

UI: Jobs -> `batch_daily` -> Materialize all -> pick the range -> Launch backfill. The test sends
the mutation the UI's partition dialog sends for that button (`launchPartitionBackfill` with the
job's partition set, the job's assets and the range) to Dagster's GraphQL API over the code
location `appdata up` serves (workspace.yaml, a code server process of its own), lets the
backfill daemon's iteration submit the runs, and the instance launches them through that code
server, as `dagster dev` does. A fresh instance and a fresh home: nothing materialized before.
It must be ONE run (the job's single-run backfill policy) and every day of the range must reach
the warehouse with exactly the rows the client dropped.

CLI: the `dagster job execute ... batch_daily --tags <range>` command of the README's "Batch"
section, taken from the README itself (only the range shortened), in a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from appdata.config import Settings
from appdata.defs.batch.schedules import JOB_NAME
from appdata.local.instance import LOCAL_TEMPLATE
from appdata.sources.client_files import batch_day_path

REPO_ROOT = Path(__file__).resolve().parents[3]
README = REPO_ROOT / "README.md"
JANUARY = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(31)]
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

JOB_ASSETS_QUERY = """
query JobAssets($selector: PipelineSelector!) {
  assetNodes(pipeline: $selector) { assetKey { path } }
}
"""

# The mutation of the UI's "Launch backfill" (LaunchAssetChoosePartitionsDialog) for a job target.
LAUNCH_BACKFILL_MUTATION = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def _client_rows(settings: Settings, days: list[dt.date]) -> dict[str, int]:
    return {d.isoformat(): pq.read_metadata(batch_day_path(settings.client_dir, d)).num_rows for d in days}


def _warehouse_rows(settings: Settings, days: list[dt.date]) -> dict[str, int]:
    from appdata.defs.resources import build_resources

    engine = build_resources(settings)["warehouse"].get_engine()
    try:
        with engine.connect() as conn:
            counted = dict(conn.execute(sa.text(
                "SELECT CAST(download_date AS VARCHAR), COUNT(*) FROM downloads_batch GROUP BY 1")).fetchall())
    finally:
        engine.dispose()
    return {d.isoformat(): int(counted.get(d.isoformat(), 0)) for d in days}


def test_ui_backfill_of_the_batch_job_is_one_run_that_fills_the_warehouse_for_every_day(provisioned, tmp_path):
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
    from dagster_graphql.test.utils import execute_dagster_graphql

    settings = Settings.from_env()
    # A fresh instance configured as `appdata up` configures it: queued runs, pools, run monitoring.
    overrides = yaml.safe_load(LOCAL_TEMPLATE.read_text())
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "dagster")) as instance, \
            create_test_daemon_workspace_context(WorkspaceFileTarget(paths=[str(REPO_ROOT / "workspace.yaml")]),
                                                 instance) as workspace:
        context = workspace.create_request_context()
        location = context.get_code_location("appdata")
        repository = next(iter(location.get_repositories().values()))
        repository_selector = {"repositoryLocationName": "appdata", "repositoryName": repository.name}

        # The dialog's assets: every asset of the job (catalogue and users included).
        assets = execute_dagster_graphql(context, JOB_ASSETS_QUERY,
                                         {"selector": {**repository_selector, "pipelineName": JOB_NAME}})
        assert not assets.errors, assets.errors
        asset_keys = [node["assetKey"] for node in assets.data["assetNodes"]]
        assert {"path": ["downloads_batch"]} in asset_keys and {"path": ["playstore_apps"]} in asset_keys

        launched = execute_dagster_graphql(context, LAUNCH_BACKFILL_MUTATION, {"backfillParams": {
            "selector": {"partitionSetName": f"{JOB_NAME}_partition_set", "repositorySelector": repository_selector},
            "assetSelection": asset_keys,
            "partitionNames": [d.isoformat() for d in JANUARY],
            "fromFailure": False,
            "tags": [],
        }})
        assert not launched.errors, launched.errors
        answer = launched.data["launchPartitionBackfill"]
        assert answer["__typename"] == "LaunchBackfillSuccess", answer
        backfill_id = answer["backfillId"]

        # The daemon's loops: the backfill daemon submits the run (and marks the backfill done once its
        # runs are), the run queue launches it through the code server.
        logger = logging.getLogger("appdata.test.backfill_daemon")
        run_queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
        deadline = time.monotonic() + 600
        while instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED:
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            assert time.monotonic() < deadline, f"backfill not done after 600 s; runs: {[r.status for r in runs]}"
            errors = [e for e in execute_backfill_iteration(workspace, logger) if e is not None]
            errors += [e for e in run_queue.run_iteration(workspace) if e is not None]
            assert errors == [], [e.to_string() for e in errors]
            time.sleep(1)
        assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS

        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(runs) == 1, f"a month is ONE run, got {len(runs)}"
        (run,) = runs
        assert run.status == dg.DagsterRunStatus.SUCCESS, [
            e.message for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_failure]
        assert run.job_name == JOB_NAME
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == ("2020-01-01", "2020-01-31")

        # Every day of the range is materialized in the instance, as the UI shows it.
        for key in ("users_app_batch_client_data", "landing_batch", "curated_batch", "downloads_batch"):
            done = instance.get_materialized_partitions(dg.AssetKey(key))
            assert done >= {d.isoformat() for d in JANUARY}, (key, sorted(set(d.isoformat() for d in JANUARY) - done))

    client = _client_rows(settings, JANUARY)
    assert all(n > 0 for n in client.values()), client
    assert _warehouse_rows(settings, JANUARY) == client


def _bash_commands(block: str) -> list[str]:
    """The commands of a bash block: backslash-continued lines joined, comments dropped."""
    commands, current = [], ""
    for line in block.splitlines():
        code = re.sub(r"\s#.*$", "", line).rstrip()  # a comment: `#` after a space
        if code.endswith("\\"):
            current += code[:-1] + " "
            continue
        current += code
        if current.strip():
            commands.append(current.strip())
        current = ""
    return commands


def _readme_cli_backfill() -> list[str]:
    """The README's CLI backfill command ("Batch" section), as argv."""
    text = README.read_text()
    batch = text[text.index("<!-- section:batch -->"):text.index("<!-- /section:batch -->")]
    commands = [c for block in re.findall(r"```bash\n(.*?)```", batch, flags=re.S) for c in _bash_commands(block)]
    found = [c for c in commands if c.startswith("dagster job execute") and f"-j {JOB_NAME}" in c]
    assert len(found) == 1, f"the Batch section should show one `dagster job execute -j {JOB_NAME}` backfill: {commands}"
    return shlex.split(found[0])


def test_cli_backfill_of_the_readme_is_one_run_that_fills_the_warehouse_for_every_day(provisioned, tmp_path):
    settings = Settings.from_env()
    argv = _readme_cli_backfill()
    tags = json.loads(argv[argv.index("--tags") + 1])
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == ("2020-01-01", "2020-12-31")  # the year, as written
    days = JANUARY[:3]  # the same command over three days: the year is the benchmark's business
    argv[argv.index("--tags") + 1] = json.dumps({RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()})
    (tmp_path / "dagster").mkdir()
    # The instance of `appdata up` (the README exports its DAGSTER_HOME); instance_for_test sets DAGSTER_HOME.
    with dg.instance_for_test(overrides=yaml.safe_load(LOCAL_TEMPLATE.read_text()),
                              temp_dir=str(tmp_path / "dagster")) as instance:
        done = subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    client = _client_rows(settings, days)
    assert all(n > 0 for n in client.values()), client
    assert _warehouse_rows(settings, days) == client
