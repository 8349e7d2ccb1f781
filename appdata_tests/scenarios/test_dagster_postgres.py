"""deploy/dagster.yaml, the production instance: valid as written, and the batch and stream pipeline
runs green with its run, event-log and schedule storage on the real PostgreSQL instead of SQLite."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from appdata_tests.conftest import PG_BASE_URL, REPO_ROOT

DEPLOY_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"}


def _launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run launcher names secrets by ARN from the environment; any ARN validates."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:appdata-{}"
    monkeypatch.setenv("DAGSTER_PG_PASSWORD_SECRET_ARN", arn.format("dagster-pg"))
    monkeypatch.setenv("APPDATA_WAREHOUSE_PASSWORD_SECRET_ARN", arn.format("warehouse"))


def _home_with_production_yaml(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_prod_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    return home


def test_production_yaml_validates_and_keeps_secrets_out(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for name, value in {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
                        "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "not-in-the-file"}.items():
        monkeypatch.setenv(name, value)
    _launcher_env(monkeypatch)
    config, _ = dagster_instance_config(str(_home_with_production_yaml(tmp_path)))

    raw = yaml.safe_load(DEPLOY_YAML.read_text())
    db = raw["storage"]["postgres"]["postgres_db"]
    assert all(set(value) == {"env"} for key, value in db.items() if key != "scheme"), "connection from env only"
    assert "not-in-the-file" not in DEPLOY_YAML.read_text()
    launcher_secrets = raw["run_launcher"]["config"]["secrets"]
    assert all(set(s["valueFrom"]) == {"env"} for s in launcher_secrets)

    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    limits = {limit["key"]: limit for limit in config["concurrency"]["runs"]["tag_concurrency_limits"]}
    # A shard's consumer run and its successor, started before the deadline to wait for the lease:
    # a limit of 1 would hold the successor in the queue until the current run ends (a gap of a task start).
    assert limits["appdata/shard"]["limit"] == 2
    assert config["concurrency"]["pools"]["default_limit"] == 1


@pytest.fixture()
def dagster_pg(postgres_engine, monkeypatch, tmp_path):
    """A dedicated database for Dagster's storage, reached only through DAGSTER_PG_* variables."""
    database = f"dagster_{uuid.uuid4().hex[:12]}"
    with postgres_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    url = make_url(PG_BASE_URL)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", database)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    _launcher_env(monkeypatch)
    storage_engine = sa.create_engine(url.set(database=database, query={}), poolclass=sa.pool.NullPool)
    yield storage_engine
    storage_engine.dispose()
    with postgres_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _groups(defs: dg.Definitions, *groups: str) -> list:
    graph = defs.resolve_asset_graph()
    keys = [key for key in graph.get_all_asset_keys() if graph.get(key).group_name in groups]
    return sorted(keys, key=lambda k: k.to_user_string())


@pytest.mark.postgres
def test_pipeline_runs_with_storage_on_postgres(appdata_env, provisioned, dagster_pg, tmp_path, monkeypatch):
    monkeypatch.setenv("APPDATA_BATCH_ROWS_PER_DAY", "100")  # a few days of a small client
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from appdata.contract import schema
    from appdata import aws
    from appdata.definitions import build_definitions
    from appdata.defs.resources import build_resources
    from appdata.defs.stream.sensor import kinesis_drain_sensor
    from appdata.warehouse.loader import count_rows
    from appdata_tests.support.events import make_event
    from appdata_tests.support.stream import until_caught_up

    instance = dg.DagsterInstance.from_config(str(_home_with_production_yaml(tmp_path)))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        defs = build_definitions()
        graph = defs.resolve_asset_graph()
        unpartitioned = [k for k in _groups(defs, "sources") if not graph.get(k).is_partitioned]
        job = dg.define_asset_job("ci_sources", selection=dg.AssetSelection.assets(*unpartitioned))
        daily = [k for k in _groups(defs, "sources", "batch") if graph.get(k).is_partitioned]
        daily_job = dg.define_asset_job("ci_daily", selection=dg.AssetSelection.assets(*daily))
        resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job, daily_job]))

        sources = resolved.resolve_job_def("ci_sources").execute_in_process(instance=instance)
        assert sources.success
        batch = resolved.resolve_job_def("ci_daily").execute_in_process(instance=instance, tags=RANGE)
        assert batch.success
        materialized = {e.asset_key.to_user_string() for e in batch.get_asset_materialization_events()}
        assert {k.to_user_string() for k in daily} <= materialized

        # Stream: events into Kinesis, the drain sensor plans against this instance, its consumer runs
        # drain (until caught up here, not until their deadline minutes away).
        resources = build_resources(appdata_env)
        kinesis = resources["kinesis"]
        events = schema.frame_to_records(schema.validate_records(schema.records_to_frame(
            [make_event(i, event_id=f"pg-{i}") for i in range(8)])).valid)
        assert not aws.put_records(kinesis.get_client(), kinesis.stream_name, events, partition_key="user_id").failed
        sensor_resources = {"kinesis": kinesis, "dynamodb": resources["dynamodb"]}
        tick = kinesis_drain_sensor(dg.build_sensor_context(instance=instance, resources=sensor_resources))
        assert len(tick.run_requests) == 1, "one consumer run for the stream's one shard"
        drains = [resolved.resolve_job_def("stream_drain_job").execute_in_process(
            instance=instance, run_config=until_caught_up(request.run_config), tags=request.tags)
            for request in tick.run_requests]
        assert all(d.success for d in drains)

        engine = resources["warehouse"].get_engine()
        try:
            assert count_rows(engine, "downloads_stream") == len(events)
            assert count_rows(engine, "downloads_batch") > 0
        finally:
            engine.dispose()

        runs = instance.get_runs()
        assert {r.run_id for r in runs} >= {sources.run_id, batch.run_id, *(d.run_id for d in drains)}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        instance.dispose()

    # What a user of the Postgres-backed deployment would check: the rows are in the database.
    with dagster_pg.connect() as conn:
        stored_runs = conn.exec_driver_sql("SELECT run_id, status FROM runs").fetchall()
        materializations = conn.exec_driver_sql(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'").scalar_one()
        partitions = conn.exec_driver_sql(
            "SELECT count(DISTINCT partition) FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition IS NOT NULL").scalar_one()
    assert {row[0] for row in stored_runs} >= {sources.run_id, batch.run_id, *(d.run_id for d in drains)}
    assert {row[1] for row in stored_runs} == {"SUCCESS"}
    assert materializations >= len(unpartitioned) + 3 * len(daily) + 3 * len(drains)
    assert partitions == 3
