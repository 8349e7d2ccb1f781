"""Stream reconciliation on the real drain: green after loading, red naming the event deleted
from one sink (lake object, DynamoDB item or warehouse row)."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from appdata.reliability.checks import stream_reconciled
from appdata.reliability.reconcile import reconcile_stream, reconcile_stream_day
from appdata.resources import build_resources
from appdata.stream import defs as stream_defs
from appdata.stream.assets import drain_run_config
from appdata_tests.reliability.conftest import make_record, report

pytestmark = pytest.mark.reliability

DAYS = ("2024-05-01", "2024-05-02")


def _put(kinesis, stream: str, records: list[dict]) -> tuple[str, str, str]:
    import json

    response = kinesis.put_records(StreamName=stream, Records=[
        {"Data": json.dumps(r).encode(), "PartitionKey": str(r["user_id"])} for r in records])
    assert response["FailedRecordCount"] == 0
    seqs = [r["SequenceNumber"] for r in response["Records"]]
    return response["Records"][0]["ShardId"], seqs[0], seqs[-1]


def _reconcile_job(settings) -> dg.JobDefinition:
    defs = dg.Definitions.merge(
        stream_defs.defs(),
        dg.Definitions(
            asset_checks=[stream_reconciled],
            jobs=[dg.define_asset_job("reconcile_stream", selection=dg.AssetSelection.checks(stream_reconciled))],
            resources=build_resources(settings),
        ),
    )
    return defs


def _check(defs, instance) -> dg.AssetCheckEvaluation:
    result = defs.resolve_job_def("reconcile_stream").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_stream_check_green_after_drain_and_red_naming_the_deleted_event(provisioned, appdata_env):
    kinesis = provisioned["kinesis"].get_client()
    records = [make_record(i, day=DAYS[i % 2]) for i in range(40)]
    records += records[:5]  # a client retried: same events again
    shard, first, last = _put(kinesis, appdata_env.stream, records)
    defs = _reconcile_job(appdata_env)
    instance = dg.DagsterInstance.ephemeral()

    # The real drain run (the job the sensor requests), twice: a replayed range changes nothing.
    drain = defs.resolve_job_def("stream_drain_job")
    for _ in range(2):
        run = drain.execute_in_process(run_config=drain_run_config(appdata_env.stream, shard, first, last),
                                       instance=instance)
        assert run.success

    green = _check(defs, instance)
    assert green.passed, green.description
    assert "2 day(s) reconciled" in green.description
    per_day = green.metadata["per_day"].data
    assert per_day[DAYS[0]] == {"lake": 20, "dynamodb": 20, "downloads_stream": 20}

    # Delete one DynamoDB item: red, naming the day and the event.
    victim = records[3]
    from appdata.schema import derive_event_id

    victim_id = derive_event_id(victim)
    dynamodb = provisioned["dynamodb"].get_client()
    dynamodb.delete_item(TableName=appdata_env.table, Key={
        "user_id": {"S": str(victim["user_id"])}, "sk": {"S": f"DL#{victim['download_date']}#{victim_id}"}})
    red = _check(defs, instance)
    assert not red.passed
    assert victim["download_date"] in red.description and victim_id in red.description
    assert "dynamodb: 1 missing" in red.description
    assert red.metadata["differences"].data[victim["download_date"]]["dynamodb"]["missing"] == [victim_id]

    # Re-draining the range repairs it (idempotent writes), and the check is green again.
    assert drain.execute_in_process(run_config=drain_run_config(appdata_env.stream, shard, first, last),
                                    instance=instance).success
    assert _check(defs, instance).passed
    report("stream reconciliation check", events=40, posted=45, days=2, red_after_delete=True, repaired_by_replay=True)


def test_reconcile_names_an_event_missing_from_the_warehouse_or_the_lake(provisioned, appdata_env):
    from appdata.stream.drain import drain_range

    kinesis = provisioned["kinesis"].get_client()
    records = [make_record(100 + i, day=DAYS[0]) for i in range(12)]
    shard, first, last = _put(kinesis, appdata_env.stream, records)
    s3 = provisioned["s3"].get_client()
    dynamodb = provisioned["dynamodb"].get_client()
    engine = provisioned["warehouse"].get_engine()
    drain_range(kinesis=kinesis, stream=appdata_env.stream, shard_id=shard, first_sequence=first,
                last_sequence=last, s3=s3, bucket=appdata_env.bucket, dynamodb=dynamodb, table=appdata_env.table,
                engine=engine)
    common = dict(s3=s3, bucket=appdata_env.bucket, dynamodb=dynamodb, table=appdata_env.table, engine=engine)
    from appdata.schema import derive_event_id

    accepted = [derive_event_id(r) for r in records]
    assert reconcile_stream_day(day=DAYS[0], accepted=accepted, **common).ok

    # The API accepted one more event than the sinks hold: named as missing everywhere.
    ghost = derive_event_id(make_record(999, day=DAYS[0]))
    short = reconcile_stream_day(day=DAYS[0], accepted=accepted + [ghost], **common)
    assert {d.sink: d.missing for d in short.failing} == {"lake": [ghost], "dynamodb": [ghost],
                                                          "downloads_stream": [ghost]}

    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM downloads_stream WHERE event_id = :e"), {"e": accepted[0]})
        conn.execute(sa.text("INSERT INTO downloads_stream SELECT * FROM downloads_stream WHERE event_id = :e"),
                     {"e": accepted[1]})
    (day,) = reconcile_stream(**common)
    (warehouse,) = day.failing
    assert warehouse.sink == "downloads_stream"
    assert warehouse.missing == [accepted[0]] and warehouse.duplicated == [accepted[1]]
    assert accepted[0] in day.describe() and accepted[1] in day.describe()

    # Delete the lake object: every event of the range is named missing from the lake.
    for key in [o["Key"] for o in s3.list_objects_v2(Bucket=appdata_env.bucket, Prefix="lake/")["Contents"]]:
        s3.delete_object(Bucket=appdata_env.bucket, Key=key)
    lake = reconcile_stream_day(day=DAYS[0], **common).failing[0]
    assert lake.sink == "lake" and lake.missing == sorted(accepted)
    engine.dispose()
    report("stream reconciliation by id", events=12, ghost_named=True, warehouse_missing_and_doubled_named=True)
