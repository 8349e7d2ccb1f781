"""Materializing the `sources` group gives row counts and the clients' files."""

import datetime as dt

import dagster as dg
import pandas as pd

from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_app_batch_client_data, users_app_stream_client_data, users_batch, users_stream
from appdata.sources.client_files import batch_day_path, stream_csv_path
from appdata.contract.schema import EVENT_COLUMNS, validate_records

SOURCES = [playstore_apps_raw, playstore_apps, users_batch, users_stream,
           users_app_batch_client_data, users_app_stream_client_data]


def _row_count(result: dg.ExecuteInProcessResult, name: str) -> int:
    events = result.asset_materializations_for_node(name)
    return int(events[-1].metadata["dagster/row_count"].value)


def test_sources_materialize_with_row_counts(appdata_env, provisioned):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [playstore_apps_raw, playstore_apps, users_batch, users_stream, users_app_stream_client_data],
            instance=instance, resources=provisioned,
        )
        assert result.success
        assert 9_500 <= _row_count(result, "playstore_apps_raw") <= 10_500
        apps = _row_count(result, "playstore_apps")
        assert apps == 9_300
        assert _row_count(result, "users_batch") == 200
        assert _row_count(result, "users_stream") == 1_000
        assert _row_count(result, "users_app_stream_client_data") == apps
        clean_meta = result.asset_materializations_for_node("playstore_apps")[-1].metadata
        assert clean_meta["exact_duplicates_dropped"].value > 0
        assert clean_meta["null_ratings_after_fill"].value == 0

        stream = pd.read_csv(stream_csv_path(appdata_env.client_dir), dtype=str, keep_default_na=False)
        assert tuple(stream.columns) == EVENT_COLUMNS
        checked = validate_records(stream)
        assert len(checked.rejected) == 0, checked.rejected.head().to_dict()
        assert stream["event_id"].is_unique
        assert set(stream["download_date"]) == {dt.date.today().isoformat()}


def test_batch_client_data_single_run_over_a_week_is_deterministic(appdata_env, provisioned):
    with dg.instance_for_test() as instance:
        dg.materialize([playstore_apps_raw, playstore_apps, users_batch], instance=instance, resources=provisioned)
        tags = {"dagster/asset_partition_range_start": "2020-03-01", "dagster/asset_partition_range_end": "2020-03-07"}
        first = dg.materialize(SOURCES[:3] + [users_app_batch_client_data], instance=instance, tags=tags,
                               selection=[users_app_batch_client_data], resources=provisioned)
        assert first.success
        days = [dt.date(2020, 3, d) for d in range(1, 8)]
        frames = [pd.read_parquet(batch_day_path(appdata_env.client_dir, day)) for day in days]
        assert all(len(f) > 0 for f in frames)
        assert all(set(f["download_date"].astype(str)) == {str(day)} for f, day in zip(frames, days))
        again = dg.materialize(SOURCES[:3] + [users_app_batch_client_data], instance=instance, tags=tags,
                               selection=[users_app_batch_client_data], resources=provisioned)
        assert again.success
        for frame, day in zip(frames, days):
            pd.testing.assert_frame_equal(frame, pd.read_parquet(batch_day_path(appdata_env.client_dir, day)))
        total = sum(len(f) for f in frames)
        assert _row_count(first, "users_app_batch_client_data") == total
