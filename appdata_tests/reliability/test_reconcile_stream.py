"""Stream reconciliation on the real drain: green after loading, red naming the event deleted
from one sink (lake object, DynamoDB item or warehouse row) or from every sink (the reference is
the Kinesis stream itself), and `appdata drain` / `appdata reconcile` as an operator runs them.
The drain is the shard consumer (a drain run, or `appdata drain`), which resumes from its
checkpoint; a range is drained a second time explicitly, with `drain_range`, as a repair does."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from appdata import aws
from appdata.contract import layout
from appdata.defs.reliability import stream_reconciled
from appdata.reliability.reconcile import reconcile_stream, reconcile_stream_day
from appdata.defs.resources import build_resources
from appdata.defs.stream.drain import drain_run_config, kinesis_downloads, stream_drain, stream_drain_job
from appdata.stream.drain import DrainResult, drain_range
from appdata_tests.support.cli import run_cli
from appdata_tests.support.events import make_event
from appdata_tests.support.reliability import report
from appdata_tests.support.stream import lease_table

pytestmark = pytest.mark.reliability

DAYS = ("2024-05-01", "2024-05-02")


def _put(kinesis, stream: str, records: list[dict]) -> tuple[str, str, str]:
    import json

    response = kinesis.put_records(StreamName=stream, Records=[
        {"Data": json.dumps(r).encode(), "PartitionKey": str(r["user_id"])} for r in records])
    assert response["FailedRecordCount"] == 0
    seqs = [r["SequenceNumber"] for r in response["Records"]]
    return response["Records"][0]["ShardId"], seqs[0], seqs[-1]


def _redrain(resources, settings, shard: str, first: str, last: str) -> DrainResult:
    """The range first..last drained once more, whatever the shard's checkpoint says (a repair)."""
    engine = resources["warehouse"].get_engine()
    try:
        return drain_range(kinesis=resources["kinesis"].get_client(), stream=settings.stream, shard_id=shard,
                           first_sequence=first, last_sequence=last, s3=resources["s3"].get_client(),
                           bucket=settings.bucket, dynamodb=resources["dynamodb"].get_client(), table=settings.table,
                           engine=engine)
    finally:
        engine.dispose()


def _consumer_run(defs, instance, settings, shard: str) -> dg.ExecuteInProcessResult:
    """The drain run the sensor requests for the shard, stopping once caught up; it must succeed."""
    run = defs.resolve_job_def("stream_drain_job").execute_in_process(
        run_config=drain_run_config(settings.stream, shard, stop_when_caught_up=True), instance=instance)
    assert run.success
    return run


def _reconcile_job(settings) -> dg.JobDefinition:
    defs = dg.Definitions.merge(
        dg.Definitions(assets=[kinesis_downloads, stream_drain], jobs=[stream_drain_job]),
        dg.Definitions(
            asset_checks=[stream_reconciled],
            jobs=[dg.define_asset_job("reconcile_stream", selection=dg.AssetSelection.checks(stream_reconciled))],
            resources=build_resources(settings),
        ),
    )
    return defs


def _check(defs, instance, grace_seconds: float = 0.0) -> dg.AssetCheckEvaluation:
    """The check as its job runs it; grace 0: every record the test put is due (none in flight)."""
    config = {"ops": {stream_reconciled.op.name: {"config": {"grace_seconds": grace_seconds}}}}
    result = defs.resolve_job_def("reconcile_stream").execute_in_process(instance=instance, run_config=config)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_stream_check_green_after_drain_and_red_naming_the_deleted_event(provisioned, appdata_env):
    kinesis = provisioned["kinesis"].get_client()
    records = [make_event(i, day=DAYS[i % 2]) for i in range(40)]
    records += records[:5]  # a client retried: same events again
    shard, first, last = _put(kinesis, appdata_env.stream, records)
    defs = _reconcile_job(appdata_env)
    instance = dg.DagsterInstance.ephemeral()

    # The real drain run (the job the sensor requests), twice: the second resumes after the
    # checkpoint and finds nothing; then the range replayed explicitly changes nothing.
    first_run = _consumer_run(defs, instance, appdata_env, shard)
    assert len(first_run.get_asset_materialization_events()) == 4  # one window, one per sink and the lake table
    assert _consumer_run(defs, instance, appdata_env, shard).get_asset_materialization_events() == []
    assert lease_table(provisioned).get(shard).checkpoint == last
    replay = _redrain(provisioned, appdata_env, shard, first, last)
    assert (replay.records, replay.warehouse_inserted) == (45, 0)

    green = _check(defs, instance)
    assert green.passed, green.description
    assert "2 day(s) reconciled" in green.description
    per_day = green.metadata["per_day"].data
    assert per_day[DAYS[0]] == {"accepted": 20, "lake": 20, "dynamodb": 20, "downloads_stream": 20}

    # Delete one DynamoDB item: red, naming the day and the event.
    victim = records[3]
    from appdata.contract.schema import derive_event_id

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
    assert _redrain(provisioned, appdata_env, shard, first, last).dynamodb_items == 40
    assert _check(defs, instance).passed
    report("stream reconciliation check", events=40, posted=45, days=2, red_after_delete=True, repaired_by_replay=True)


def test_reconcile_names_an_event_missing_from_the_warehouse_or_the_lake(provisioned, appdata_env):
    kinesis = provisioned["kinesis"].get_client()
    records = [make_event(100 + i, day=DAYS[0]) for i in range(12)]
    shard, first, last = _put(kinesis, appdata_env.stream, records)
    s3 = provisioned["s3"].get_client()
    dynamodb = provisioned["dynamodb"].get_client()
    engine = provisioned["warehouse"].get_engine()
    drain_range(kinesis=kinesis, stream=appdata_env.stream, shard_id=shard, first_sequence=first,
                last_sequence=last, s3=s3, bucket=appdata_env.bucket, dynamodb=dynamodb, table=appdata_env.table,
                engine=engine)
    common = dict(s3=s3, bucket=appdata_env.bucket, dynamodb=dynamodb, table=appdata_env.table, engine=engine)
    from appdata.contract.schema import derive_event_id

    accepted = [derive_event_id(r) for r in records]
    assert reconcile_stream_day(day=DAYS[0], accepted=accepted, **common).ok

    # The API accepted one more event than the sinks hold: named as missing everywhere.
    ghost = derive_event_id(make_event(999, day=DAYS[0]))
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


# ------------------------------------------------------------------ against the source: the stream itself


def _sinks(provisioned, settings) -> dict:
    return dict(s3=provisioned["s3"].get_client(), bucket=settings.bucket,
                dynamodb=provisioned["dynamodb"].get_client(), table=settings.table)


def _remove_from_lake(s3, bucket: str, day: str, event_id: str) -> str:
    """Rewrite the lake object holding `event_id` without its line (as a buggy writer would)."""
    import gzip
    import json

    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"lake/stream/download_date={day}/")
    for key in [o["Key"] for o in listing.get("Contents", [])]:
        lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode().splitlines()
        kept = [line for line in lines if json.loads(line)["event_id"] != event_id]
        if len(kept) < len(lines):
            s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress("".join(f"{line}\n" for line in kept).encode()))
            return key
    raise AssertionError(f"{event_id} is in no lake object of {day}")


def _delete_from_every_sink(provisioned, settings, record: dict, event_id: str) -> None:
    """The event gone from the lake (object rewritten without it), DynamoDB and the warehouse."""
    sinks = _sinks(provisioned, settings)
    _remove_from_lake(sinks["s3"], settings.bucket, record["download_date"], event_id)
    sinks["dynamodb"].delete_item(TableName=settings.table, Key={
        "user_id": {"S": str(record["user_id"])}, "sk": {"S": f"DL#{record['download_date']}#{event_id}"}})
    engine = provisioned["warehouse"].get_engine()
    with engine.begin() as conn:
        deleted = conn.execute(sa.text("DELETE FROM downloads_stream WHERE event_id = :e"), {"e": event_id}).rowcount
    engine.dispose()
    assert deleted == 1


def _newest_arrival(kinesis, stream: str) -> float:
    from appdata.stream.drain import list_shards, read_shard

    stamps = [r["ApproximateArrivalTimestamp"].timestamp()
              for shard in list_shards(kinesis, stream)
              for r in read_shard(kinesis, stream, shard["ShardId"], max_records=10**6).records]
    return max(stamps)


def test_check_red_naming_the_event_missing_from_every_sink_and_green_after_the_range_is_drained_again(
        provisioned, appdata_env):
    from appdata.contract.schema import derive_event_id

    kinesis = provisioned["kinesis"].get_client()
    records = [make_event(300 + i, day=DAYS[i % 2]) for i in range(30)]
    shard, first, last = _put(kinesis, appdata_env.stream, records)
    defs = _reconcile_job(appdata_env)
    instance = dg.DagsterInstance.ephemeral()
    _consumer_run(defs, instance, appdata_env, shard)
    assert _check(defs, instance).passed

    victim = records[7]
    victim_id = derive_event_id(victim)
    _delete_from_every_sink(provisioned, appdata_env, victim, victim_id)
    engine = provisioned["warehouse"].get_engine()
    # The sinks agree with one another: compared only among themselves, nothing is wrong.
    assert all(d.ok for d in reconcile_stream(engine=engine, **_sinks(provisioned, appdata_env)))

    red = _check(defs, instance)
    assert not red.passed
    assert victim["download_date"] in red.description and victim_id in red.description
    assert "1 accepted on the stream and in NO sink" in red.description
    assert f"at {shard}/" in red.description  # where it is on the stream, to re-drain it
    lost = red.metadata["lost"].data
    assert list(lost) == [victim["download_date"]] and list(lost[victim["download_date"]]) == [victim_id]
    position = lost[victim["download_date"]][victim_id]
    assert position.startswith(f"{shard}/") and int(first) <= int(position.split("/")[1]) <= int(last)
    differences = red.metadata["differences"].data[victim["download_date"]]
    assert {sink: d["missing"] for sink, d in differences.items()} == {
        "lake": [victim_id], "dynamodb": [victim_id], "downloads_stream": [victim_id]}
    other_day = DAYS[1] if victim["download_date"] == DAYS[0] else DAYS[0]
    assert red.metadata["failing_days"].data == [victim["download_date"]] and other_day not in red.description

    # A consumer run resumes after its checkpoint: it does not see the loss, nor repair it.
    assert _consumer_run(defs, instance, appdata_env, shard).get_asset_materialization_events() == []
    assert not _check(defs, instance).passed
    # The range drained again (the repair the red check's position points to) restores it everywhere.
    assert _redrain(provisioned, appdata_env, shard, first, last).warehouse_inserted == 1
    green = _check(defs, instance)
    assert green.passed, green.description
    assert green.metadata["per_day"].data[victim["download_date"]]["accepted"] == 15
    engine.dispose()
    report("stream check against the stream", events=30, deleted_from_every_sink=1, union_check_green=True,
           source_check_red=True, repaired_by_redrain=True)


def test_events_in_flight_are_not_judged_until_due(provisioned, appdata_env):
    """Records put and not drained: in flight until `grace` after their arrival, then named."""
    from appdata.reliability.reconcile import STREAM_GRACE_SECONDS, reconcile_stream_against_source
    from appdata.contract.schema import derive_event_id

    kinesis = provisioned["kinesis"].get_client()
    records = [make_event(400 + i, day=DAYS[0]) for i in range(6)]
    _put(kinesis, appdata_env.stream, records)
    newest = _newest_arrival(kinesis, appdata_env.stream)
    engine = provisioned["warehouse"].get_engine()
    common = dict(engine=engine, kinesis=kinesis, stream=appdata_env.stream, **_sinks(provisioned, appdata_env))

    (young,), reference = reconcile_stream_against_source(now=newest + STREAM_GRACE_SECONDS - 1, **common)
    assert young.ok, young.describe()
    assert young.counts == {"accepted": 0, "lake": 0, "dynamodb": 0, "downloads_stream": 0, "in_flight": 6}
    assert reference.summary()["in_flight_records"] == 6

    (due,), _ = reconcile_stream_against_source(now=newest + STREAM_GRACE_SECONDS, **common)
    ids = sorted(derive_event_id(r) for r in records)
    assert not due.ok and sorted(due.lost) == ids
    assert all(i in due.describe() for i in ids) and DAYS[0] in due.describe()
    engine.dispose()
    report("stream events in flight", events=6, grace_seconds=STREAM_GRACE_SECONDS, judged_only_when_due=True)


def test_every_record_the_drain_rejects_must_have_its_dead_letter(provisioned, appdata_env):
    from appdata.reliability.reconcile import reconcile_stream_against_source

    kinesis = provisioned["kinesis"].get_client()
    records = [make_event(500 + i, day=DAYS[0]) for i in range(5)] + [make_event(505, day=DAYS[0], age=7)]
    shard, first, last = _put(kinesis, appdata_env.stream, records)
    sinks = _sinks(provisioned, appdata_env)
    engine = provisioned["warehouse"].get_engine()
    result = drain_range(kinesis=kinesis, stream=appdata_env.stream, shard_id=shard, first_sequence=first,
                         last_sequence=last, engine=engine, **sinks)
    assert (result.valid, result.rejected) == (5, 1)
    common = dict(engine=engine, kinesis=kinesis, stream=appdata_env.stream, grace_seconds=0, **sinks)
    (day,), _ = reconcile_stream_against_source(**common)
    assert day.ok, day.describe()
    assert day.counts == {"accepted": 5, "lake": 5, "dynamodb": 5, "downloads_stream": 5, "rejected": 1}

    (key,) = result.rejected_objects
    sinks["s3"].delete_object(Bucket=appdata_env.bucket, Key=key)
    (day,), _ = reconcile_stream_against_source(**common)
    (letters,) = day.failing
    assert letters.sink == "dead letters" and letters.missing == [f"{shard}/{last}"]
    assert f"dead letters: 1 missing vs rejected by the drain: {shard}/{last}" in day.describe()
    engine.dispose()


# ------------------------------------------------------------------ operator commands


def test_appdata_drain_and_reconcile_red_when_an_event_is_deleted_from_every_sink(provisioned, appdata_env):
    import json

    from appdata.contract.schema import derive_event_id

    kinesis = provisioned["kinesis"].get_client()
    records = [make_event(600 + i, day=DAYS[i % 2]) for i in range(42)] + [make_event(700, day=DAYS[0], age=7)]
    shard, first, last = _put(kinesis, appdata_env.stream, records)

    out = run_cli("drain")
    assert f"  {shard} {first}..{last}: 43 records, 42 valid, 1 rejected; lake " in out, out
    assert "DynamoDB 42 item(s), warehouse +42 row(s)" in out
    assert out.count(f"  {shard} ") == 1  # one line per range: one GetRecords answer, one range
    assert "drained 43 records in 1 range(s): 42 valid" in out and "+42 new warehouse rows" in out
    # The touched users' recommendations, from a model fitted once (none was saved yet) and kept in S3.
    assert "recommendation item(s) refreshed for" in out and "with the model fitted at" in out
    assert aws.object_exists(provisioned["s3"].get_client(), appdata_env.bucket, layout.RECOMMENDER_MODEL_KEY)
    ok = run_cli("reconcile", "--stream", "--grace", "0")
    assert "stream: 2 day(s) reconciled" in ok and "accepted 21, lake 21, dynamodb 21, downloads_stream 21" in ok

    # Drained again: `appdata drain` resumes after the checkpoint and finds nothing ...
    again = run_cli("drain")
    assert "drained 0 records in 0 range(s)" in again and f"  {shard} " not in again, again
    # ... and the same range drained explicitly rewrites the same objects and items, and inserts no row.
    replay = _redrain(provisioned, appdata_env, shard, first, last)
    assert (replay.records, replay.dynamodb_items, replay.warehouse_inserted) == (43, 42, 0)
    assert "stream: 2 day(s) reconciled" in run_cli("reconcile", "--stream", "--grace", "0")

    victim = records[10]
    victim_id = derive_event_id(victim)
    day = victim["download_date"]
    _delete_from_every_sink(provisioned, appdata_env, victim, victim_id)
    red = run_cli("reconcile", "--grace", "0", code=1)
    assert f"FAIL  stream {day}:" in red and victim_id in red and "in NO sink" in red
    assert f"stream: 1 of 2 day(s) NOT reconciled: {day}" in red
    as_json = json.loads(run_cli("reconcile", "--stream", "--grace", "0", "--json", code=1))
    (failing,) = [d for d in as_json["days"] if not d["ok"]]
    assert as_json["ok"] is False and failing["day"] == day and list(failing["lost"]) == [victim_id]
    other = DAYS[1] if day == DAYS[0] else DAYS[0]
    assert "1 day(s) reconciled" in run_cli("reconcile", "--stream", "--grace", "0", "--start", other, "--end", other)
    # In flight (the default grace, records just put): not judged yet, so not red.
    assert "stream: 2 day(s) reconciled" in run_cli("reconcile", "--stream")

    # `appdata drain` does not go back behind its checkpoint; draining the range again restores the event.
    assert "drained 0 records in 0 range(s)" in run_cli("drain")
    assert _redrain(provisioned, appdata_env, shard, first, last).warehouse_inserted == 1
    assert "stream: 2 day(s) reconciled" in run_cli("reconcile", "--stream", "--grace", "0")
    assert "batch: nothing to reconcile" in run_cli("reconcile", "--batch")
    run_cli("reconcile", "--start", "2024-13-01", code=2)
    report("appdata drain / reconcile", records=43, ranges=1, red_naming_event=True, restored_by_redrain=True)


def test_appdata_drain_exits_non_zero_naming_the_range_a_sink_refused_then_delivers_it(provisioned, appdata_env):
    from appdata.local.provision import provision

    kinesis = provisioned["kinesis"].get_client()
    shard, first, last = _put(kinesis, appdata_env.stream, [make_event(800 + i, day=DAYS[0]) for i in range(8)])
    dynamodb = provisioned["dynamodb"].get_client()
    dynamodb.delete_table(TableName=appdata_env.table)
    dynamodb.get_waiter("table_not_exists").wait(TableName=appdata_env.table)

    failed = run_cli("drain", code=1)
    assert f"{shard}: range {first}..{last} not delivered" in failed and "(attempt 5 of 5)" in failed, failed
    assert "ResourceNotFoundException" in failed and "run `appdata provision`" in failed
    assert lease_table(provisioned).get(shard).pending == (first, last)  # left for the next consumer

    provision(provisioned)
    out = run_cli("drain")
    assert f"{shard}: range {first}..{last} was left pending by an earlier consumer; draining it again first" in out
    assert f"  {shard} {first}..{last}: 8 records, 8 valid" in out and "not delivered" not in out
    assert "drained 8 records in 1 range(s)" in out
    assert (lease_table(provisioned).get(shard).pending, lease_table(provisioned).get(shard).checkpoint) == (None, last)
    assert "stream: 1 day(s) reconciled" in run_cli("reconcile", "--stream", "--grace", "0")
