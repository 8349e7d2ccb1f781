"""A batch dead letter fixed and replayed with `appdata rejected replay`, then the day re-run:
the ETL reads the replay file next to the client's drop, the fixed row reaches downloads_batch
exactly once, and the day still reconciles (landing = curated + rejected = warehouse)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import dagster as dg

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from appdata import aws
from appdata.contract import layout
from appdata.defs.reliability import batch_reconciled
from appdata.cli.reliability import rejected
from appdata.reliability.reconcile import reconcile_batch
from appdata_tests.support.reliability import report

pytestmark = pytest.mark.reliability

DAY = "2022-05-10"
BAD_ROW = 3  # data row number in the client's drop (1 = first row after the header)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(rejected, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _warehouse_count(batch_world, event_id: str) -> int:
    engine = batch_world.resources["warehouse"].get_engine()
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT COUNT(*) FROM downloads_batch WHERE event_id = :e"),
                                {"e": event_id}).scalar_one()
    finally:
        engine.dispose()


def _check(world) -> dg.AssetCheckEvaluation:
    """The batch_reconciled asset check, run on its own as the UI would."""
    defs = dg.Definitions(
        assets=world.all, asset_checks=[batch_reconciled], resources=world.resources,
        jobs=[dg.define_asset_job("reconcile_batch", selection=dg.AssetSelection.checks(batch_reconciled))],
    )
    result = defs.resolve_job_def("reconcile_batch").execute_in_process(instance=world.instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _reconciled(batch_world):
    engine = batch_world.resources["warehouse"].get_engine()
    try:
        (day,) = reconcile_batch(s3=batch_world.resources["s3"].get_client(), bucket=batch_world.settings.bucket,
                                 engine=engine, days=[DAY])
    finally:
        engine.dispose()
    assert day.ok, day.describe()
    check = _check(batch_world)
    assert check.passed, check.description
    return day


def _curated_checks_green(result) -> None:
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations]


def test_fixed_batch_row_replayed_is_loaded_once_and_the_day_reconciles(batch_world, tmp_path):
    bucket = batch_world.settings.bucket
    s3 = batch_world.resources["s3"].get_client()
    batch_world.run([batch_world.client, batch_world.landing], DAY, DAY, config=batch_world.client_config())

    # The client's drop has one bad row (an age that is no number).
    drop_key = layout.landing_key(dt.date.fromisoformat(DAY))
    rows = list(csv.reader(io.StringIO(s3.get_object(Bucket=bucket, Key=drop_key)["Body"].read().decode())))
    header, data = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    victim = data[BAD_ROW - 1][col["event_id"]]
    good_age = data[BAD_ROW - 1][col["age"]]
    data[BAD_ROW - 1][col["age"]] = "twenty"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header] + data)
    s3.put_object(Bucket=bucket, Key=drop_key, Body=out.getvalue().encode())

    first = batch_world.run([batch_world.curated, batch_world.warehouse], DAY, DAY)
    _curated_checks_green(first)
    assert _warehouse_count(batch_world, victim) == 0
    _reconciled(batch_world)

    # The dead letter names the row, the field and the landing file it came from.
    listed = _cli("list", "--source", "batch", "--date", DAY)
    assert "age" in listed
    dead_key = next(aws.list_keys(s3, bucket, f"rejected/batch/download_date={DAY}/"))
    (shown,) = [json.loads(line) for line in _cli("show", dead_key).splitlines()]
    assert (shown["row"], shown["field"], shown["landing_key"]) == (BAD_ROW, "age", drop_key)
    assert shown["record"]["event_id"] == victim

    # The user fixes the age and replays: a replay CSV lands next to the client's drop.
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps({**shown, "record": {**shown["record"], "age": good_age}}) + "\n")
    replayed = _cli("replay", dead_key, "--fixed", str(fixed))
    assert f"landing/batch/download_date={DAY}/replay-" in replayed
    landing = list(aws.list_keys(s3, bucket, f"landing/batch/download_date={DAY}/"))
    assert len(landing) == 2 and drop_key in landing

    # Re-materializing the day loads the fixed row exactly once; a second run changes nothing.
    for attempt in range(2):
        result = batch_world.run([batch_world.curated, batch_world.warehouse], DAY, DAY)
        _curated_checks_green(result)
        assert _warehouse_count(batch_world, victim) == 1
        day = _reconciled(batch_world)
        assert day.counts["landing"] == len(data) + 1
        assert day.counts["curated"] == day.counts["downloads_batch"] == len(data)
        assert day.counts["rejected"] == 1  # the client's original bad row, still in its drop
    assert "no rejected records" in _cli("list", "--source", "batch", "--date", DAY)

    # A replay file repeating an event the day already holds is rejected as a duplicate, by its own
    # file and row, and never doubles the row in the warehouse.
    copy = [list(data[0])]
    copy[0][col["minutes_spent"]] = "1"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header] + copy)
    dup_key = f"landing/batch/download_date={DAY}/replay-zzzz-duplicate.csv"
    s3.put_object(Bucket=bucket, Key=dup_key, Body=out.getvalue().encode())
    batch_world.run([batch_world.curated, batch_world.warehouse], DAY, DAY)
    assert _warehouse_count(batch_world, data[0][col["event_id"]]) == 1
    day = _reconciled(batch_world)
    assert day.counts["landing"] == len(data) + 2 and day.counts["rejected"] == 2
    letters = [json.loads(line) for line in _cli("show", dead_key).splitlines()]
    duplicate = next(item for item in letters if item["landing_key"] == dup_key)
    assert (duplicate["row"], duplicate["field"]) == (1, "event_id")
    report("batch dead letter fixed, replayed and re-run", day=DAY, rows=len(data), replayed=1,
           in_warehouse_once=True, reruns=2, cross_file_duplicate_rejected=True)
