"""The daily batch schedule: 23:00 in the configured zone for that day's partition, and the job it runs."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from appdata.config import Settings
from appdata.defs.batch.schedules import SCHEDULE_NAME, build_batch_schedule, partition_key_at


def test_schedule_fires_at_23_for_that_days_partition(offline_env, monkeypatch):
    monkeypatch.setenv("APPDATA_TIMEZONE", "Europe/Paris")
    schedule = build_batch_schedule(Settings.from_env())
    assert schedule.name == SCHEDULE_NAME
    assert schedule.cron_schedule == "0 23 * * *"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = dt.datetime(2024, 6, 3, 21, 0, tzinfo=dt.timezone.utc)  # 23:00 in Paris (CEST)
    context = dg.build_schedule_context(scheduled_execution_time=tick)
    request = schedule(context)
    assert request.partition_key == "2024-06-03"
    assert partition_key_at(dt.datetime(2024, 6, 3, 23, 0, tzinfo=dt.timezone.utc), "UTC") == "2024-06-03"


def test_definitions_expose_batch_job_schedule_and_warehouse_pool():
    from appdata.definitions import defs

    job = defs.resolve_job_def("batch_daily")
    assert {"landing_batch", "curated_batch", "downloads_batch", "users_app_batch_client_data"} <= {
        k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert job.executor_def.name == "in_process"  # one chain of steps: no process per step
    assert defs.resolve_schedule_def(SCHEDULE_NAME).default_status == dg.DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("downloads_batch")).pools == {"warehouse"}
    assert not graph.has(dg.AssetKey("apps")) and not graph.has(dg.AssetKey("users"))  # removed: nothing read them
    for key in ("landing_batch", "curated_batch", "downloads_batch"):
        policy = graph.get(dg.AssetKey(key)).backfill_policy
        assert policy is not None and policy.max_partitions_per_run is None, key
