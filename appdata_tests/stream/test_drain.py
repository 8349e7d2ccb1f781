"""The Kinesis drain against the real emulator: exact counts in all three sinks, idempotent
replays, dead letters with shard and sequence number, and the consumer run's materializations."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from appdata.contract import schema
from appdata.defs.stream.drain import STREAM_FRESHNESS, drain_run_config, stream_drain
from appdata.stream.drain import drain_range, read_shard
from appdata.warehouse.loader import count_rows, read_frame
from appdata_tests.support.events import todays_event
from appdata_tests.support.stream import dynamo_items, lake_state, put



@pytest.fixture()
def sinks(provisioned):
    r = provisioned
    engine = r["warehouse"].get_engine()
    yield dict(kinesis=r["kinesis"].get_client(), stream=r["kinesis"].stream_name, s3=r["s3"].get_client(),
               bucket=r["s3"].bucket, dynamodb=r["dynamodb"].get_client(), table=r["dynamodb"].table_name,
               engine=engine)
    engine.dispose()


def drain(sinks, shard_id, first, last):
    return drain_range(shard_id=shard_id, first_sequence=first, last_sequence=last, **sinks)


def test_drain_writes_exact_counts_and_replay_changes_nothing(sinks):
    events = [todays_event(i) for i in range(120)]
    results = put(sinks["kinesis"], sinks["stream"], events)
    shard_id = results[0]["ShardId"]
    first, last = results[0]["SequenceNumber"], results[-1]["SequenceNumber"]

    result = drain(sinks, shard_id, first, last)
    assert (result.records, result.valid, result.rejected) == (120, 120, 0)
    assert result.users == {100_001 + k for k in range(7)}

    lake = lake_state(sinks["s3"], sinks["bucket"])
    hour = dt.datetime.now(dt.timezone.utc).strftime("%H")
    assert len(lake) == 1
    (key, lines), = lake.items()
    assert key.startswith(f"lake/stream/download_date={events[0]['download_date']}/hour=")
    assert key.endswith(f"/{shard_id}-{first}-{last}.jsonl.gz")
    assert key.split("hour=")[1][:2] in {hour, f"{(int(hour) - 1) % 24:02d}"}
    assert sorted(line["event_id"] for line in lines) == sorted(e["event_id"] for e in events)

    items = dynamo_items(sinks["dynamodb"], sinks["table"])
    assert len(items) == 120
    sample = next(i for i in items if i["sk"]["S"].endswith(events[0]["event_id"]))
    assert sample["user_id"] == {"S": str(events[0]["user_id"])}
    assert sample["sk"]["S"] == f"DL#{events[0]['download_date']}#{events[0]['event_id']}"
    assert "size_mb" not in sample and sample["age"] == {"N": str(events[0]["age"])}
    assert count_rows(sinks["engine"], "downloads_stream") == 120

    again = drain(sinks, shard_id, first, last)
    assert again.lake_objects == result.lake_objects
    assert again.warehouse_inserted == 0
    assert lake_state(sinks["s3"], sinks["bucket"]) == lake
    assert len(dynamo_items(sinks["dynamodb"], sinks["table"])) == 120
    assert count_rows(sinks["engine"], "downloads_stream") == 120


def test_invalid_and_undecodable_records_are_dead_lettered_and_do_not_block(sinks):
    bad_age = {**todays_event(1), "age": 7}
    no_date = {**todays_event(2), "download_date": "yesterday"}
    payloads = [todays_event(0), b"\xff\xfe not json", bad_age, b"[1, 2]", no_date, todays_event(3)]
    results = put(sinks["kinesis"], sinks["stream"], payloads)
    shard_id = results[0]["ShardId"]
    result = drain(sinks, shard_id, results[0]["SequenceNumber"], results[-1]["SequenceNumber"])
    assert (result.valid, result.rejected) == (2, 4)

    s3, bucket = sinks["s3"], sinks["bucket"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="rejected/stream/").get("Contents", [])]
    lines = [json.loads(line) for k in keys for line in s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode().splitlines()]
    by_seq = {line["sequence_number"]: line for line in lines}
    assert set(by_seq) == {results[i]["SequenceNumber"] for i in (1, 2, 3, 4)}
    assert all(line["shard_id"] == shard_id and line["source"] == "stream" for line in lines)
    assert by_seq[results[2]["SequenceNumber"]]["field"] == "age"
    assert by_seq[results[4]["SequenceNumber"]]["field"] == "download_date"
    assert by_seq[results[1]["SequenceNumber"]]["reason"].startswith("undecodable")
    assert all(k.startswith("rejected/stream/download_date=") and k.endswith(".jsonl") for k in keys)
    assert count_rows(sinks["engine"], "downloads_stream") == 2
    # the valid record after the bad ones went through: nothing blocks the shard
    frame = read_frame(sinks["engine"], "SELECT event_id FROM downloads_stream")
    assert todays_event(3)["event_id"] in set(frame["event_id"])


def test_duplicate_events_land_once(sinks):
    events = [todays_event(i) for i in range(30)]
    results = put(sinks["kinesis"], sinks["stream"], events + events[:10])  # a client retried 10
    shard_id = results[0]["ShardId"]
    drain(sinks, shard_id, results[0]["SequenceNumber"], results[29]["SequenceNumber"])
    drain(sinks, shard_id, results[30]["SequenceNumber"], results[-1]["SequenceNumber"])
    assert count_rows(sinks["engine"], "downloads_stream") == 30
    assert len(dynamo_items(sinks["dynamodb"], sinks["table"])) == 30
    lake_ids = {line["event_id"] for lines in lake_state(sinks["s3"], sinks["bucket"]).values() for line in lines}
    assert len(lake_ids) == 30


def test_drain_asset_materializes_its_sinks_with_metadata(provisioned):
    kinesis = provisioned["kinesis"]
    results = put(kinesis.get_client(), kinesis.stream_name, [todays_event(i) for i in range(12)])
    with dg.instance_for_test() as instance:
        outcome = dg.materialize([stream_drain], resources=provisioned, instance=instance,
                                 run_config=drain_run_config(kinesis.stream_name, results[0]["ShardId"],
                                                             stop_when_caught_up=True))
        assert outcome.success
        by_key = {m.asset_key.to_user_string(): m.metadata for m in outcome.get_asset_materialization_events()
                  and [e.materialization for e in outcome.get_asset_materialization_events()]}
    table = by_key.pop("lake_downloads_stream")  # the lake table's commit, at the run's end
    assert (table["rows_appended"].value, table["rows_read_again_from_kinesis"].value) == (12, 0)
    assert set(by_key) == {"stream_lake", "dynamodb_downloads", "downloads_stream"}
    assert by_key["stream_lake"]["records"].value == 12
    assert by_key["stream_lake"]["objects_written"].value == 1
    assert by_key["downloads_stream"]["rows_inserted"].value == 12
    assert by_key["dynamodb_downloads"]["users_touched"].value == 7
    for metadata in by_key.values():  # the range reached the shard's newest record, written just now
        assert metadata["behind_shard_tip_seconds"].value == 0
        assert 0 <= metadata["newest_record_age_seconds"].value < 3600


def test_stream_sinks_declare_how_fresh_they_must_be():
    specs = {spec.key.to_user_string(): spec for spec in stream_drain.specs}
    assert set(specs) == {"stream_lake", "dynamodb_downloads", "downloads_stream", "lake_downloads_stream"}
    for spec in specs.values():
        assert spec.freshness_policy == STREAM_FRESHNESS


def test_read_shard_stops_at_until(sinks):
    results = put(sinks["kinesis"], sinks["stream"], [todays_event(i) for i in range(20)])
    read = read_shard(sinks["kinesis"], sinks["stream"], results[0]["ShardId"], at=results[5]["SequenceNumber"],
                      until=results[9]["SequenceNumber"])
    assert [r["SequenceNumber"] for r in read.records] == [r["SequenceNumber"] for r in results[5:10]]


def test_drain_refreshes_recommendations_of_the_users_it_touched(provisioned):
    """A new download leaves the user's recommendations within the consumer run that loads it,
    scored with the saved model (fitted and saved by the full refresh)."""
    from appdata.analytics.recommend import refresh_all_recommendations
    from appdata.sources.catalogue import clean_catalogue, load_catalogue
    from appdata.sources.users import downloads_for_day, make_users
    from appdata.warehouse.loader import replace_all
    import pandas as pd

    apps, _ = clean_catalogue(load_catalogue(None)[0])
    users = make_users(40, 100_001, 7, sorted(apps["category"].unique()), "stream")
    history = [downloads_for_day(apps, users, dt.date(2020, 1, 1) + dt.timedelta(days=d), source="stream",
                                 seed=7, rows=60) for d in range(20)]
    engine = provisioned["warehouse"].get_engine()
    replace_all(engine, "downloads_batch", pd.concat(history, ignore_index=True))
    user = int(history[0]["user_id"].iloc[0])
    dynamodb, table = provisioned["dynamodb"].get_client(), provisioned["dynamodb"].table_name
    refresh_all_recommendations(engine, provisioned["s3"].get_client(), provisioned["s3"].bucket, dynamodb, table)
    engine.dispose()

    def recommended() -> list[str]:
        item = dynamodb.get_item(TableName=table, Key={"user_id": {"S": str(user)}, "sk": {"S": "REC"}})["Item"]
        return [entry["M"]["app"]["S"] for entry in item["apps"]["L"]]

    before = recommended()
    assert len(before) == 10
    chosen = apps.set_index("app").loc[before[0]]
    event = {**todays_event(999, user_id=user), "app": before[0], "category": chosen["category"]}
    kinesis = provisioned["kinesis"]
    results = put(kinesis.get_client(), kinesis.stream_name, [event])
    with dg.instance_for_test() as instance:
        outcome = dg.materialize([stream_drain], resources=provisioned, instance=instance,
                                 run_config=drain_run_config(kinesis.stream_name, results[0]["ShardId"],
                                                             stop_when_caught_up=True))
    assert outcome.success
    meta = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
            for e in outcome.get_asset_materialization_events()}
    assert meta["dynamodb_downloads"]["recommendations_refreshed"].value == 1
    assert meta["dynamodb_downloads"]["recommender_fitted_now"].value is False  # the saved model, no refit
    after = recommended()
    assert before[0] not in after and len(after) == 10


def test_one_event_id_with_other_content_is_a_conflict_and_every_sink_keeps_the_first(sinks):
    """Within a range and across ranges (against the warehouse), the first record of an id wins
    in the lake, DynamoDB and the warehouse; a resend with the same content is no conflict."""
    first = todays_event(1)
    other_content = {**first, "app": "Another App"}  # same id, same day
    today = first["download_date"]  # the events' own day: a run across midnight keeps its verdict
    other_day = {**first, "download_date": "2020-01-01"}  # same id: would be a second DynamoDB item
    padded = {**first, "event_id": f"  {first['event_id']} ", "minutes_spent": 99}
    one = put(sinks["kinesis"], sinks["stream"], [first, todays_event(2), other_content, first])
    result = drain(sinks, one[0]["ShardId"], one[0]["SequenceNumber"], one[-1]["SequenceNumber"])
    assert (result.valid, result.rejected) == (3, 1)

    two = put(sinks["kinesis"], sinks["stream"], [other_day, padded, first, todays_event(3)])
    result = drain(sinks, two[0]["ShardId"], two[0]["SequenceNumber"], two[-1]["SequenceNumber"])
    assert (result.valid, result.rejected) == (2, 2)
    again = drain(sinks, two[0]["ShardId"], two[0]["SequenceNumber"], two[-1]["SequenceNumber"])
    assert (again.valid, again.rejected) == (2, 2)  # the verdict of a re-drained range is stable

    stored = read_frame(sinks["engine"], "SELECT * FROM downloads_stream WHERE event_id = :e",
                        {"e": first["event_id"]})
    assert stored[["app", "minutes_spent"]].values.tolist() == [["App 1", first["minutes_spent"]]]
    items = [i for i in dynamo_items(sinks["dynamodb"], sinks["table"]) if first["event_id"] in i["sk"]["S"]]
    assert [(i["sk"]["S"], i["app"]["S"]) for i in items] == [(f"DL#{today}#{first['event_id']}", "App 1")]
    lake = [line for lines in lake_state(sinks["s3"], sinks["bucket"]).values() for line in lines
            if line["event_id"] == first["event_id"]]
    assert {(line["app"], line["minutes_spent"], line["download_date"]) for line in lake} == {
        ("App 1", first["minutes_spent"], today)}

    letters = [json.loads(line) for page in sinks["s3"].get_paginator("list_objects_v2").paginate(
        Bucket=sinks["bucket"], Prefix="rejected/stream/") for o in page.get("Contents", [])
        for line in sinks["s3"].get_object(Bucket=sinks["bucket"], Key=o["Key"])["Body"].read().decode().splitlines()]
    assert sorted((letter["record"].get("app"), letter["record"]["download_date"]) for letter in letters) == [
        ("Another App", today), ("App 1", "2020-01-01"), ("App 1", today)]
    assert {(letter["field"], letter["reason"]) for letter in letters} == {("event_id", schema.CONFLICT)}


def test_isolate_finds_each_refused_record_by_halving_and_writes_the_rest():
    from botocore.exceptions import ClientError

    from appdata.stream.drain import _dynamodb_refusal, isolate

    written: list[str] = []

    def write(part: list[str]) -> None:
        if any(item.startswith("poison") for item in part):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": f"{len(part)} items: too big"}},
                              "BatchWriteItem")
        written.extend(part)

    items = ["a", "poison-1", "b", "c", "d", "poison-2", "e"]
    refused = isolate(write, items, _dynamodb_refusal, key=str)
    assert sorted(written) == ["a", "b", "c", "d", "e"]
    assert refused == [("poison-1", "DynamoDB refused the item: 1 items: too big"),
                       ("poison-2", "DynamoDB refused the item: 1 items: too big")]

    def down(part: list[str]) -> None:  # a sink that is down refuses every record alike: the range fails
        raise ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no table"}}, "BatchWriteItem")

    with pytest.raises(ClientError):
        isolate(down, items, _dynamodb_refusal, key=str)

    # A value DynamoDB cannot store is refused before the call (aws.ItemError), just as DynamoDB would.
    from appdata import aws

    events = [{"user_id": "1", "size_mb": 1.5}, {"user_id": "2", "size_mb": 1e-200}, {"user_id": "3", "size_mb": None}]
    serialized = isolate(lambda part: [aws.to_item(event) for event in part], events, _dynamodb_refusal,
                         key=lambda event: event["user_id"])
    assert [(user, reason.split(" (")[0]) for user, reason in serialized] == [
        ("2", "DynamoDB refused the item: size_mb: DynamoDB cannot store '1e-200'")]
