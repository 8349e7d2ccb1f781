"""DataFrame assets live in the lake: a run on another machine (fresh DAGSTER_HOME, APPDATA_HOME,
temp dir and working directory; only the emulator shared) loads what an earlier run stored."""

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from appdata.contract import layout
from appdata.defs.resources import LakeParquetIOManager, frame_from_parquet, frame_to_parquet
from appdata.sources.catalogue import clean_catalogue, load_catalogue
from appdata_tests.conftest import REPO_ROOT


def frame_digest(frame: pd.DataFrame) -> str:
    """Row values, index, column names and dtypes: equal digests, equal frames."""
    digest = hashlib.sha256(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


FIRST_RUN = '''
import json, dagster as dg
from appdata_tests.defs.test_resources_io_manager import frame_digest as digest
from appdata.defs.resources import build_resources
from appdata.defs.sources import playstore_apps, playstore_apps_raw

result = dg.materialize([playstore_apps_raw, playstore_apps], resources=build_resources(),
                        instance=dg.DagsterInstance.get())
apps = result.output_for_node("playstore_apps")
meta = result.asset_materializations_for_node("playstore_apps")[-1].metadata
print(json.dumps({"success": result.success, "rows": len(apps), "digest": digest(apps),
                  "s3_uri": meta["s3_uri"].value, "bytes": meta["bytes"].value}))
'''

SECOND_RUN = '''
import json, dagster as dg, pandas as pd
from appdata_tests.defs.test_resources_io_manager import frame_digest as digest
from appdata.defs.resources import build_resources
from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_batch

@dg.asset(deps=[users_batch])
def loaded_probe(playstore_apps: pd.DataFrame) -> dg.MaterializeResult:
    """What a downstream asset of this run received for playstore_apps."""
    return dg.MaterializeResult(metadata={"rows": len(playstore_apps), "digest": digest(playstore_apps)})

instance = dg.DagsterInstance.get()
assert not instance.get_latest_materialization_event(dg.AssetKey("playstore_apps"))  # a fresh home
result = dg.materialize([playstore_apps_raw, playstore_apps, users_batch, loaded_probe], resources=build_resources(),
                        instance=instance, selection=[users_batch, loaded_probe])
probe = result.asset_materializations_for_node("loaded_probe")[-1].metadata
users = result.output_for_node("users_batch")
print(json.dumps({"success": result.success, "rows": probe["rows"].value, "digest": probe["digest"].value,
                  "users": len(users), "user_categories": sorted(set(";".join(users["favourite_categories"]).split(";"))),
                  "steps": sorted(e.step_key for e in result.get_step_success_events())}))
'''


def _run_on_a_fresh_machine(script: str, root: Path) -> dict:
    """`script` in a new Python with its own DAGSTER_HOME, APPDATA_HOME, TMPDIR and cwd under `root`."""
    root.mkdir()
    for name in ("dagster", "home", "tmp"):
        (root / name).mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(root / "dagster"), APPDATA_HOME=str(root / "home"),
               TMPDIR=str(root / "tmp"), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_with_a_fresh_disk_loads_the_stored_frame(provisioned, tmp_path):
    first = _run_on_a_fresh_machine(FIRST_RUN, tmp_path / "machine-1")
    assert first["success"] and first["rows"] == 9_300

    key = layout.asset_value_key(["playstore_apps"])
    assert first["s3_uri"] == f"s3://{provisioned['s3'].bucket}/{key}"
    stored = provisioned["s3"].get_client().get_object(Bucket=provisioned["s3"].bucket, Key=key)["Body"].read()
    assert first["bytes"] == len(stored)
    from_s3 = frame_from_parquet(stored)
    assert (len(from_s3), frame_digest(from_s3)) == (first["rows"], first["digest"])

    second = _run_on_a_fresh_machine(SECOND_RUN, tmp_path / "machine-2")
    assert second["success"]
    assert second["steps"] == ["loaded_probe", "users_batch"]  # nothing upstream re-ran
    assert (second["rows"], second["digest"]) == (first["rows"], first["digest"])
    assert second["users"] == 200
    assert set(second["user_categories"]) <= set(from_s3["category"])


def test_the_raw_catalogue_round_trips_with_its_object_columns_and_helper_columns():
    raw, _ = load_catalogue(None, seed=42)
    assert raw["Android Ver"].isna().any()  # None in an object column: must come back as None, not NaN
    back = frame_from_parquet(frame_to_parquet(raw))
    pd.testing.assert_frame_equal(back, raw)
    assert back.loc[raw["Android Ver"].isna(), "Android Ver"].map(type).eq(type(None)).all()
    assert list(back.columns[-2:]) == ["_line", "_fields"] and back["_fields"].dtype == "int64"
    apps, report = clean_catalogue(back)
    expected, expected_report = clean_catalogue(raw)
    pd.testing.assert_frame_equal(apps, expected)
    assert report.as_dict() == expected_report.as_dict()


def test_typed_frames_round_trip():
    frame = pd.DataFrame({
        "text": pd.Series(["a", None, "c"], dtype="str"),
        "nullable_int": pd.array([1, None, 3], dtype="Int64"),
        "day": [dt.date(2020, 1, 1), None, dt.date(2020, 1, 3)],
        "at": pd.to_datetime(["2020-01-01 10:00", None, "2020-01-03 00:00"]).tz_localize("UTC"),
        "category": pd.Categorical(["x", "y", "x"]),
    }, index=pd.Index([10, 20, 30], name="row"))
    pd.testing.assert_frame_equal(frame_from_parquet(frame_to_parquet(frame)), frame)


def test_a_column_of_mixed_types_is_refused_with_its_name_not_converted():
    frame = pd.DataFrame({"fine": [1, 2], "version": pd.Series(["1.0", 2], dtype=object)})
    with pytest.raises(TypeError, match="version"):
        frame_to_parquet(frame)


daily = dg.DailyPartitionsDefinition(start_date="2020-03-01", end_date="2020-03-04")


@dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
def daily_frame(context: dg.AssetExecutionContext) -> dict[str, pd.DataFrame]:
    """One frame per day of the run's window, keyed by partition."""
    return {key: pd.DataFrame({"day": [key], "n": [i]}) for i, key in enumerate(context.partition_keys)}


@dg.asset
def days_seen(daily_frame: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(daily_frame.values(), ignore_index=True)


def test_partitioned_frames_are_one_object_per_partition(provisioned):
    io_manager = LakeParquetIOManager(s3=provisioned["s3"])
    resources = {"io_manager": io_manager}
    tags = {"dagster/asset_partition_range_start": "2020-03-01", "dagster/asset_partition_range_end": "2020-03-03"}
    with dg.instance_for_test() as instance:
        stored = dg.materialize([daily_frame], resources=resources, instance=instance, tags=tags)
        assert stored.success
        meta = stored.asset_materializations_for_node("daily_frame")[-1].metadata
        bucket = provisioned["s3"].bucket
        keys = [layout.asset_value_key(["daily_frame"], day) for day in ("2020-03-01", "2020-03-02", "2020-03-03")]
        assert meta["s3_uris"].value == [f"s3://{bucket}/{k}" for k in keys]
        client = provisioned["s3"].get_client()
        one = frame_from_parquet(client.get_object(Bucket=bucket, Key=keys[1])["Body"].read())
        assert one.to_dict("records") == [{"day": "2020-03-02", "n": 1}]

        loaded = dg.materialize([daily_frame, days_seen], resources=resources, instance=instance,
                                selection=[days_seen])
        assert loaded.success
        assert loaded.output_for_node("days_seen")["day"].tolist() == ["2020-03-01", "2020-03-02", "2020-03-03"]
