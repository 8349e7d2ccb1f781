"""The batch path end to end on the real emulator: a week backfilled as ONE run, twice, on DuckDB
and on PostgreSQL, leaves exactly the client's rows in downloads_batch with every check green."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from appdata.local import batch_demo as demo
from appdata.defs.batch.schedules import SCHEDULE_NAME, partition_key_at
from appdata.config import Settings
from appdata.local.provision import ensure_bucket
from appdata.defs.resources import build_resources
from appdata.sources.client_files import batch_day_path
from appdata.warehouse.loader import create_schema

WEEK = [dt.date(2020, 3, 1) + dt.timedelta(days=i) for i in range(7)]
SOURCES = ["playstore_apps_raw", "playstore_apps", "users_batch"]


@pytest.fixture()
def sources_instance(appdata_env):
    """An instance holding the catalogue and batch users, their values stored in this test's lake bucket."""
    instance = dg.DagsterInstance.ephemeral()
    from appdata.defs.sources import assets as source_assets

    resources = build_resources(appdata_env)
    ensure_bucket(resources["s3"])
    dg.materialize([a for a in source_assets if a.key.to_user_string() in SOURCES], instance=instance,
                   resources=resources)
    yield instance
    instance.dispose()


def _resources(settings: Settings) -> dict:
    resources = build_resources(settings)
    ensure_bucket(resources["s3"])
    engine = resources["warehouse"].get_engine()
    create_schema(engine)
    engine.dispose()
    return resources


def _client_rows(settings: Settings, days) -> dict[str, list[str]]:
    return {d.isoformat(): sorted(pq.read_table(batch_day_path(settings.client_dir, d)).column("event_id").to_pylist())
            for d in days}


def _warehouse_rows(resources: dict, days) -> dict[str, list[str]]:
    engine = resources["warehouse"].get_engine()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT download_date, event_id FROM downloads_batch")).fetchall()
    engine.dispose()
    out: dict[str, list[str]] = {d.isoformat(): [] for d in days}
    for day, event_id in rows:
        out.setdefault(str(day)[:10], []).append(event_id)
    return {k: sorted(v) for k, v in out.items()}


def _backfill_week_twice(settings: Settings, instance: dg.DagsterInstance) -> None:
    resources = _resources(settings)
    for attempt in (1, 2):
        result = demo.materialize_range(WEEK[0], WEEK[-1], resources, instance=instance, selection=demo.PARTITIONED)
        assert result.success
        # ONE run covered the whole week: every partitioned step ran once over the window.
        materialized = result.get_asset_materialization_events()
        assert sorted({e.asset_key.to_user_string() for e in materialized}) == sorted(demo.PARTITIONED)
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} >= {"landing_rows_reconcile", "rows_match_curated",
                                                  "no_null_keys", "no_duplicate_event_id"}
        failed = [(c.asset_key.to_user_string(), c.check_name, c.metadata) for c in checks if not c.passed]
        assert failed == [], f"attempt {attempt}: checks failed {failed}"

        client = _client_rows(settings, WEEK)
        assert sum(map(len, client.values())) > 0
        assert _warehouse_rows(resources, WEEK) == client, f"attempt {attempt}"
    table = demo.stage_counts(settings, WEEK, resources)
    assert demo.reconcile(table) == []
    assert [r["warehouse"] for r in table] == [len(client[d.isoformat()]) for d in WEEK]


def test_week_backfilled_twice_on_duckdb_holds_exactly_the_client_rows(appdata_env, duckdb_url, monkeypatch,
                                                                        sources_instance):
    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", duckdb_url)
    _backfill_week_twice(Settings.from_env(), sources_instance)


@pytest.mark.postgres
def test_week_backfilled_twice_on_postgres_holds_exactly_the_client_rows(appdata_env, postgres_url, monkeypatch,
                                                                          sources_instance):
    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", postgres_url)
    _backfill_week_twice(Settings.from_env(), sources_instance)


def test_rerun_of_one_day_inside_a_loaded_week_keeps_the_neighbours(appdata_env, duckdb_url, monkeypatch,
                                                                    sources_instance):
    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", duckdb_url)
    settings = Settings.from_env()
    resources = _resources(settings)
    assert demo.materialize_range(WEEK[0], WEEK[-1], resources, instance=sources_instance,
                                  selection=demo.PARTITIONED).success
    assert demo.materialize_range(WEEK[3], WEEK[3], resources, instance=sources_instance,
                                  selection=demo.PARTITIONED).success
    assert _warehouse_rows(resources, WEEK) == _client_rows(settings, WEEK)


def test_landing_missing_for_a_day_fails_with_a_clear_message(appdata_env, duckdb_url, monkeypatch, sources_instance):
    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", duckdb_url)
    settings = Settings.from_env()
    resources = _resources(settings)
    result = demo.materialize_range(WEEK[0], WEEK[0], resources, instance=sources_instance,
                                    selection=["curated_batch", "downloads_batch"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no landing file for 2020-03-01" in failure.step_failure_data.error.message


def test_schedule_fires_at_23_for_that_days_partition(appdata_env, monkeypatch):
    monkeypatch.setenv("APPDATA_TIMEZONE", "Europe/Paris")
    from appdata.defs.batch.schedules import build_batch_schedule

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


def test_local_instance_config_limits_the_warehouse_pool_and_frees_crashed_runs(tmp_path: Path):
    shutil.copy(Path(__file__).resolve().parents[1] / "appdata" / "local" / "dagster_local.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert "MONITORING" in instance.get_required_daemon_types()
    finally:
        instance.dispose()
