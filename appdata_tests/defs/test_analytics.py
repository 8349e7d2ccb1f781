"""The marts follow their inputs (declarative automation), without waiting for the nightly clock."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from appdata.analytics.marts import MARTS
from appdata.definitions import defs

UTC = dt.timezone.utc
MARTS_AND_FOLLOWERS = {*MARTS, "user_recommendations", "analytics_report"}
ANALYTICS = dg.AssetSelection.groups("analytics")


def requested(result: dg.EvaluateAutomationConditionsResult) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def materialized(instance: dg.DagsterInstance, *names: str, partition: str | None = None) -> None:
    for name in names:
        instance.report_runless_asset_event(dg.AssetMaterialization(name, partition=partition))


def tick(instance: dg.DagsterInstance, at: dt.datetime, cursor=None) -> tuple[set[str], object]:
    """One sensor tick at time `at`. Run in a worker thread: the evaluation's asyncio.run() would
    leave the main thread without an event loop, which later tests (Mangum) need."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(dg.evaluate_automation_conditions, defs=defs, instance=instance,
                             asset_selection=ANALYTICS, evaluation_time=at, cursor=cursor).result()
    return requested(result), result.cursor


def test_a_batch_load_rebuilds_marts_then_followers_and_the_stream_is_rate_limited() -> None:
    instance = dg.DagsterInstance.ephemeral()
    t0 = dt.datetime(2026, 5, 4, 10, 1, tzinfo=UTC)
    first, cursor = tick(instance, t0)
    assert first == set()  # nothing changed: nothing to do

    # A batch partition loaded at 10:02: the marts (and, in the same tick, their followers) go.
    materialized(instance, "downloads_batch", partition="2026-05-03")
    after_batch, cursor = tick(instance, t0 + dt.timedelta(minutes=1), cursor)
    assert after_batch == MARTS_AND_FOLLOWERS

    materialized(instance, *MARTS_AND_FOLLOWERS)
    settled, cursor = tick(instance, t0 + dt.timedelta(minutes=2), cursor)
    assert settled == set()

    # Drains write downloads_stream every few seconds: no rebuild before the next 15-minute tick...
    materialized(instance, "downloads_stream")
    early, cursor = tick(instance, t0 + dt.timedelta(minutes=3), cursor)
    materialized(instance, "downloads_stream")
    still_early, cursor = tick(instance, t0 + dt.timedelta(minutes=10), cursor)
    assert early == still_early == set()
    # ...then one rebuild after 10:15.
    due, cursor = tick(instance, t0 + dt.timedelta(minutes=15), cursor)
    assert due == MARTS_AND_FOLLOWERS
    materialized(instance, *MARTS_AND_FOLLOWERS)
    # The next 15-minute tick without any drain in between requests nothing.
    quiet, cursor = tick(instance, t0 + dt.timedelta(minutes=31), cursor)
    assert quiet == set()


def test_the_automation_sensor_is_on_by_default() -> None:
    sensor = defs.get_sensor_def("analytics_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    repo = defs.get_repository_def()
    automated = {node.key.to_user_string() for node in repo.asset_graph.asset_nodes
                 if node.automation_condition is not None}
    assert automated == MARTS_AND_FOLLOWERS


def test_user_recommendations_refits_saves_the_model_and_says_when(provisioned: dict) -> None:
    """The full refresh leaves the model the drain's incremental refreshes load, fitted when its metadata says."""
    from appdata.analytics import recommend
    from appdata.contract import layout
    from appdata.defs.analytics import user_recommendations
    from appdata.sources.catalogue import clean_catalogue, load_catalogue
    from appdata.warehouse.loader import replace_all
    from appdata_tests.support.analytics import generated

    apps, _ = clean_catalogue(load_catalogue(None, seed=7)[0])
    engine = provisioned["warehouse"].get_engine()
    replace_all(engine, "downloads_stream", generated(apps, "taste", users=120, days=3, rows=600))
    engine.dispose()
    result = dg.materialize([user_recommendations], resources=provisioned)
    assert result.success
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("user_recommendations")[0].metadata.items()}
    assert metadata["users"] == 120 and metadata["model_apps"] > 0
    bucket = provisioned["s3"].bucket
    assert metadata["model_uri"] == f"s3://{bucket}/{layout.RECOMMENDER_MODEL_KEY}"
    recommend._models.clear()
    saved = recommend.load_model(provisioned["s3"].get_client(), bucket)
    assert saved.fitted_at.timestamp() == metadata["model_fitted_at"]
