"""Batch reconciliation on the real batch assets: landing = curated + rejected = warehouse,
green after a load, red naming the day and the event when one row is deleted from a sink."""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from appdata.defs.reliability import batch_reconciled
from appdata.reliability.reconcile import reconcile_batch
from appdata_tests.support.reliability import report

pytestmark = pytest.mark.reliability

FIRST, LAST = "2021-06-01", "2021-06-02"
OTHER = "2021-07-01"


def _check(world) -> dg.AssetCheckEvaluation:
    defs = dg.Definitions(
        assets=world.all,
        asset_checks=[batch_reconciled],
        jobs=[dg.define_asset_job("reconcile_batch", selection=dg.AssetSelection.checks(batch_reconciled))],
        resources=world.resources,
    )
    result = defs.resolve_job_def("reconcile_batch").execute_in_process(instance=world.instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_batch_check_green_after_load_and_red_naming_the_deleted_row(batch_world):
    batch_world.load(FIRST, LAST)
    green = _check(batch_world)
    assert green.passed, green.description
    per_day = green.metadata["per_day"].data
    assert {FIRST, LAST} <= set(per_day) and "reconciled" in green.description
    assert per_day[FIRST]["landing"] == per_day[FIRST]["curated"] + per_day[FIRST]["rejected"]
    assert per_day[FIRST]["curated"] == per_day[FIRST]["downloads_batch"] > 0

    engine = batch_world.resources["warehouse"].get_engine()
    with engine.connect() as conn:
        victim = conn.execute(sa.text("SELECT event_id FROM downloads_batch WHERE download_date = :d "
                                      "ORDER BY event_id LIMIT 1"), {"d": pd.Timestamp(LAST).date()}).scalar_one()
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM downloads_batch WHERE event_id = :e"), {"e": victim})
    engine.dispose()
    red = _check(batch_world)
    assert not red.passed
    assert LAST in red.description and victim in red.description and "downloads_batch: 1 missing" in red.description
    assert red.metadata["failing_days"].data == [LAST]
    assert red.metadata["differences"].data[LAST]["downloads_batch"]["missing"] == [victim]

    # Re-running the day reloads it atomically: green again.
    batch_world.run([batch_world.warehouse], LAST, LAST)
    assert _check(batch_world).passed
    report("batch reconciliation check", days=2, rows=sum(d["landing"] for d in per_day.values()),
           red_after_delete=True, repaired_by_rerun=True)


def test_batch_reconcile_names_a_row_lost_between_landing_and_curated(batch_world):
    appdata_env = batch_world.settings
    batch_world.load(OTHER, OTHER)
    s3 = batch_world.resources["s3"].get_client()
    engine = batch_world.resources["warehouse"].get_engine()
    (day,) = reconcile_batch(s3=s3, bucket=appdata_env.bucket, engine=engine, days=[OTHER])
    assert day.ok, day.describe()

    # Drop one row from the curated Parquet (as a buggy ETL would): named as missing there.
    key = f"curated/batch/download_date={OTHER}/part.parquet"
    frame = pd.read_parquet(io.BytesIO(s3.get_object(Bucket=appdata_env.bucket, Key=key)["Body"].read()))
    lost = frame["event_id"].iloc[-1]
    buffer = io.BytesIO()
    frame.iloc[:-1].to_parquet(buffer, index=False)
    s3.put_object(Bucket=appdata_env.bucket, Key=key, Body=buffer.getvalue())
    (day,) = reconcile_batch(s3=s3, bucket=appdata_env.bucket, engine=engine, days=[OTHER])
    diffs = {d.sink: d for d in day.failing}
    assert diffs["curated+rejected"].missing == [lost]
    assert diffs["downloads_batch"].extra == [lost]  # the warehouse still has it: more than curated
    s3.put_object(Bucket=appdata_env.bucket, Key=key, Body=frame.to_parquet(index=False))
    engine.dispose()
    report("batch reconciliation by id", day=OTHER, lost_named=lost)


def test_user_names_never_reach_the_dagster_event_log_of_a_batch_run(batch_world):
    """Security: the run's whole event log (messages and metadata, previews included) holds no name."""
    from dagster._serdes import serialize_value

    from appdata.sources.client_files import batch_day_path

    day = "2021-08-01"
    result = batch_world.load(day, day)
    names = set(pd.read_parquet(batch_day_path(batch_world.settings.client_dir, pd.Timestamp(day).date()))["name"])
    assert len(names) > 10
    log = "\n".join(serialize_value(entry) for entry in batch_world.instance.all_logs(result.run_id))
    assert "download_date" in log  # the log is really there, with its metadata
    leaked = sorted(n for n in names if n in log)
    assert leaked == [], f"user names in the Dagster event log: {leaked[:5]}"
    report("no names in Dagster logs", names_checked=len(names), log_chars=len(log), leaked=0)
