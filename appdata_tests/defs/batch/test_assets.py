"""The batch path end to end on the real emulator: a week backfilled as ONE run, twice, on DuckDB
and on PostgreSQL, leaves exactly the client's rows in downloads_batch with every check green."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from appdata.local import batch_demo as demo
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
    from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_batch

    resources = build_resources(appdata_env)
    ensure_bucket(resources["s3"])
    dg.materialize([playstore_apps_raw, playstore_apps, users_batch], instance=instance, resources=resources)
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
