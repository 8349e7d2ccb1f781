"""The drain sensor keeps one consumer per shard and never leaves a shard without one: the
successor is requested before the deadline, a failed consumer is followed by a new one after a
delay (which drains the failed range first), and shards run in KCL order. Real emulator, real
Dagster instance, real consumer runs."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import dagster as dg
from botocore.stub import Stubber

from appdata.definitions import build_definitions
from appdata.defs.stream.drain import SHARD_TAG, UNTIL_TAG, drain_run_config
from appdata.defs.stream.sensor import (
    ATTEMPT_TAG, RUN_SECONDS, kinesis_drain_sensor, plan_requests, retry_delay, shard_tag_value,
)
from appdata.local.provision import ensure_table
from appdata.stream.drain import list_shards
from appdata.warehouse.loader import count_rows
from appdata_tests.support.events import todays_event
from appdata_tests.support.stream import dynamo_items, lake_state, lease_table, put

NOW = 1_800_000_000.0


def _drain_job():
    return build_definitions().resolve_job_def("stream_drain_job")


def _tick(resources, instance, now: float = NOW):
    return plan_requests(resources["kinesis"].get_client(), lease_table(resources), instance, now=now)


def _consumer_run(instance, stream: str, shard_id: str, until: float, status=dg.DagsterRunStatus.STARTED) -> None:
    instance.add_run(dg.DagsterRun(job_name="stream_drain_job", run_id=str(uuid.uuid4()), status=status,
                                   tags={SHARD_TAG: shard_tag_value(stream, shard_id), UNTIL_TAG: f"{until:.0f}"}))


def test_one_consumer_per_shard_and_its_successor_before_the_deadline(provisioned):
    kinesis = provisioned["kinesis"]
    stream = kinesis.stream_name
    shard_id = list_shards(kinesis.get_client(), stream)[0]["ShardId"]
    with dg.instance_for_test() as instance:
        (request,), _ = _tick(provisioned, instance)
        until = NOW + RUN_SECONDS
        assert request.run_key == f"{stream}:{shard_id}:until-{until:.0f}"
        assert request.tags[SHARD_TAG] == shard_tag_value(stream, shard_id) and request.tags[ATTEMPT_TAG] == "1"
        assert request.run_config == drain_run_config(stream, shard_id, until)

        _consumer_run(instance, stream, shard_id, until)
        assert _tick(provisioned, instance, now=NOW + 10)[0] == []  # running, far from its deadline
        (successor,), notes = _tick(provisioned, instance, now=until - 30)
        assert successor.tags[UNTIL_TAG] == f"{until + RUN_SECONDS:.0f}"  # starts now, takes over at `until`
        _consumer_run(instance, stream, shard_id, until + RUN_SECONDS, status=dg.DagsterRunStatus.NOT_STARTED)
        assert _tick(provisioned, instance, now=until - 20)[0] == []  # never a third


def test_sensor_tick_through_dagster(provisioned):
    with dg.instance_for_test() as instance:
        result = kinesis_drain_sensor(dg.build_sensor_context(
            instance=instance, resources={"kinesis": provisioned["kinesis"], "dynamodb": provisioned["dynamodb"]}))
    (request,) = result.run_requests
    assert float(request.tags[UNTIL_TAG]) - time.time() > RUN_SECONDS - 60


def test_a_failed_consumer_is_followed_by_one_that_delivers_its_pending_range(provisioned):
    kinesis, s3, dynamodb = provisioned["kinesis"], provisioned["s3"], provisioned["dynamodb"]
    put(kinesis.get_client(), kinesis.stream_name, [todays_event(i) for i in range(20)])
    job = _drain_job()
    engine = provisioned["warehouse"].get_engine()
    with dg.instance_for_test() as instance:
        (first,), _ = _tick(provisioned, instance, now=time.time())
        dynamodb.get_client().delete_table(TableName=dynamodb.table_name)  # a sink goes down during this run
        failed = job.execute_in_process(instance=instance, tags=first.tags, raise_on_error=False,
                                        run_config=drain_run_config(kinesis.stream_name, list_shards(
                                            kinesis.get_client(), kinesis.stream_name)[0]["ShardId"],
                                            stop_when_caught_up=True))
        assert not failed.success
        ensure_table(dynamodb)  # the sink is back
        shard_id = list_shards(kinesis.get_client(), kinesis.stream_name)[0]["ShardId"]
        assert lease_table(provisioned).get(shard_id).pending is not None

        ended_at = instance.get_run_record_by_id(failed.run_id).end_time
        waiting, notes = _tick(provisioned, instance, now=ended_at)
        assert waiting == [] and any(level == "warning" and "next consumer in" in line for level, line in notes)
        (retry,), notes = _tick(provisioned, instance, now=ended_at + retry_delay(1))
        assert retry.tags[ATTEMPT_TAG] == "2"
        delivered = job.execute_in_process(instance=instance, tags=retry.tags,
                                           run_config=drain_run_config(kinesis.stream_name, shard_id,
                                                                       stop_when_caught_up=True))
        assert delivered.success
        assert lease_table(provisioned).get(shard_id).pending is None

    lake_ids = {line["event_id"] for lines in lake_state(s3.get_client(), s3.bucket).values() for line in lines}
    dynamo_ids = {item["sk"]["S"].split("#")[-1] for item in dynamo_items(dynamodb.get_client(), dynamodb.table_name)
                  if item["sk"]["S"].startswith("DL#")}
    expected = {todays_event(i)["event_id"] for i in range(20)}
    assert lake_ids == expected and dynamo_ids == expected
    assert count_rows(engine, "downloads_stream") == 20
    engine.dispose()


def test_a_failed_run_of_another_stream_is_not_this_streams(provisioned):
    with dg.instance_for_test() as instance:
        _consumer_run(instance, "another-stream", "shardId-000000000000", NOW, status=dg.DagsterRunStatus.FAILURE)
        (request,), notes = _tick(provisioned, instance)
    assert request.tags[ATTEMPT_TAG] == "1" and not [line for level, line in notes if level != "info"]


def _topology(*shards: dict) -> dict:
    return {"Shards": [{"HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                        "SequenceNumberRange": {"StartingSequenceNumber": "1"}, **s} for s in shards]}


def test_children_wait_until_each_parent_is_delivered_to_its_end(provisioned):
    """moto never closes a shard: the topology comes from botocore's Stubber, the leases from the emulator."""
    leases = lease_table(provisioned)
    kinesis = boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    topology = _topology({"ShardId": "a"}, {"ShardId": "b"},
                         {"ShardId": "m", "ParentShardId": "a", "AdjacentParentShardId": "b"})
    with Stubber(kinesis) as stubber, dg.instance_for_test() as instance:
        for _ in range(3):
            stubber.add_response("list_shards", topology, {"StreamName": leases.stream})
        requests, _ = plan_requests(kinesis, leases, instance, now=NOW)
        assert [r.run_config["ops"]["stream_drain"]["config"]["shard_id"] for r in requests] == ["a", "b"]

        for shard_id in ("a",):  # one parent delivered to its end: the child still waits
            leases.acquire(shard_id, "consumer", 60)
            leases.mark_shard_end(shard_id, "consumer")
            leases.release(shard_id, "consumer")
        requests, notes = plan_requests(kinesis, leases, instance, now=NOW)
        assert [r.run_config["ops"]["stream_drain"]["config"]["shard_id"] for r in requests] == ["b"]
        assert any("m: waits for its parents ['b']" in line for _, line in notes)

        leases.acquire("b", "consumer", 60)
        leases.mark_shard_end("b", "consumer")
        requests, _ = plan_requests(kinesis, leases, instance, now=NOW)
        assert [r.run_config["ops"]["stream_drain"]["config"]["shard_id"] for r in requests] == ["m"]


def _ended_run(instance, stream: str, shard_id: str, status, attempt: int) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="stream_drain_job", run_id=run_id, status=status,
                                   tags={SHARD_TAG: shard_tag_value(stream, shard_id), UNTIL_TAG: f"{NOW:.0f}",
                                         ATTEMPT_TAG: str(attempt)}))
    return run_id


def test_a_canceled_consumer_is_followed_at_once_and_a_failure_is_reported_once(provisioned):
    """Stopping the stack cancels the consumer: no back-off, no attempt counted. A failed consumer is
    a warning the first time the sensor sees it, not on every tick of its back-off."""
    kinesis = provisioned["kinesis"]
    stream = kinesis.stream_name
    shard_id = list_shards(kinesis.get_client(), stream)[0]["ShardId"]
    with dg.instance_for_test() as instance:
        _ended_run(instance, stream, shard_id, dg.DagsterRunStatus.CANCELED, attempt=4)
        (request,), notes = _tick(provisioned, instance, now=NOW + 1)
        assert request.tags[ATTEMPT_TAG] == "1" and [level for level, _ in notes] == ["info"]

        failed = _ended_run(instance, stream, shard_id, dg.DagsterRunStatus.FAILURE, attempt=7)
        ended_at = instance.get_run_record_by_id(failed).update_timestamp.timestamp()
        warned: set[str] = set()
        levels = []
        for tick in range(6):  # ticks every 10 s during the back-off (300 s after a 7th attempt)
            requests, notes = plan_requests(kinesis.get_client(), lease_table(provisioned), instance,
                                            now=ended_at + tick * 10, warned=warned)
            assert requests == []
            levels += [level for level, _ in notes]
        assert levels == ["warning"] + ["info"] * 5 and warned == {failed}


def test_the_sensor_records_a_baseline_once_and_keeps_reported_failures_in_its_cursor(provisioned):
    kinesis = provisioned["kinesis"]
    shard_id = list_shards(kinesis.get_client(), kinesis.stream_name)[0]["ShardId"]
    resources = {"kinesis": kinesis, "dynamodb": provisioned["dynamodb"]}
    with dg.instance_for_test() as instance:
        failed = _ended_run(instance, kinesis.stream_name, shard_id, dg.DagsterRunStatus.FAILURE, attempt=9)
        first = kinesis_drain_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert instance.get_latest_materialization_event(dg.AssetKey("downloads_stream")) is not None
        assert first.run_requests == [] and failed[:8] in first.skip_reason.skip_message
        assert json.loads(first.cursor) == {"warned": [failed]}
        second = kinesis_drain_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                              cursor=first.cursor))
        assert second.cursor == first.cursor and failed[:8] in second.skip_reason.skip_message
        materializations = instance.fetch_materializations(dg.AssetKey("downloads_stream"), limit=10).records
        assert len(materializations) == 1  # the baseline, once
