"""The drain sensor never moves on silently: a range whose run failed is requested again until
it is delivered, and a stream that was re-created under the same name is said loudly and read
from its start. Real emulator, real Dagster instance, real drain runs."""

from __future__ import annotations

import json

import dagster as dg

from appdata.definitions import build_definitions
from appdata.local.provision import provision
from appdata.defs.stream.sensor import ATTEMPT_TAG, plan_requests, retry_delay, stream_identity
from appdata.warehouse.loader import count_rows
from appdata_tests.support.events import todays_event
from appdata_tests.support.stream import dynamo_items, lake_state, put


def _drain_job():
    return build_definitions().resolve_job_def("stream_drain_job")


def _tick(kinesis, cursor: dict, instance, now: float | None = None):
    client = kinesis.get_client()
    return plan_requests(client, kinesis.stream_name, cursor, instance,
                         identity=stream_identity(client, kinesis.stream_name), now=now)


def test_a_failed_range_is_requested_again_until_delivered(provisioned):
    kinesis, s3, dynamodb = provisioned["kinesis"], provisioned["s3"], provisioned["dynamodb"]
    put(kinesis.get_client(), kinesis.stream_name, [todays_event(i) for i in range(20)])
    engine = provisioned["warehouse"].get_engine()
    job = _drain_job()
    with dg.instance_for_test() as instance:
        requests, cursor, _ = _tick(kinesis, {"shards": {}, "ended": []}, instance)
        (first_request,) = requests
        with engine.begin() as conn:  # the warehouse "goes down" for this one run
            conn.exec_driver_sql("DROP TABLE downloads_stream")
        failed = job.execute_in_process(instance=instance, run_config=first_request.run_config,
                                        tags=first_request.tags, raise_on_error=False)
        assert not failed.success
        provision(provisioned)  # the sink is back

        # Right after the failure: nothing new is requested and the shard does not move on.
        ended_at = instance.get_run_record_by_id(failed.run_id).end_time
        put(kinesis.get_client(), kinesis.stream_name, [todays_event(i) for i in range(100, 105)])
        waiting, cursor_waiting, notes = _tick(kinesis, cursor, instance, now=ended_at)
        assert waiting == [] and cursor_waiting == cursor
        assert any(level == "warning" and "not delivered, next attempt in" in line for level, line in notes)

        # Once the delay has passed: the same range again, as attempt 2, and still nothing after it.
        retried, cursor_retried, notes = _tick(kinesis, cursor, instance, now=ended_at + retry_delay(1))
        (retry,) = retried
        assert retry.run_config == first_request.run_config
        assert retry.tags[ATTEMPT_TAG] == "2" and retry.run_key == first_request.run_key + ":attempt-2"
        assert cursor_retried == cursor
        delivered = job.execute_in_process(instance=instance, run_config=retry.run_config, tags=retry.tags)
        assert delivered.success

        # Delivered: the shard moves on to the records that came after.
        later, cursor_later, _ = _tick(kinesis, cursor, instance)
        assert [r.tags["appdata/records"] for r in later] == ["5"]
        assert int(later[0].tags["appdata/first_sequence"]) > int(first_request.tags["appdata/last_sequence"])
        assert cursor_later["shards"] != cursor["shards"]

    lake_ids = {line["event_id"] for lines in lake_state(s3.get_client(), s3.bucket).values() for line in lines}
    dynamo_ids = {item["sk"]["S"].split("#")[-1] for item in dynamo_items(dynamodb.get_client(), dynamodb.table_name)
                  if item["sk"]["S"].startswith("DL#")}
    expected = {todays_event(i)["event_id"] for i in range(20)}
    assert lake_ids == expected and dynamo_ids == expected
    assert count_rows(engine, "downloads_stream") == 20
    engine.dispose()


def test_a_re_created_stream_is_reported_and_read_from_its_start(provisioned):
    kinesis = provisioned["kinesis"]
    client, stream = kinesis.get_client(), kinesis.stream_name
    put(client, stream, [todays_event(i) for i in range(30)])
    with dg.instance_for_test() as instance:
        _, cursor, _ = _tick(kinesis, {"shards": {}, "ended": []}, instance)
        old_identity = cursor["stream"]

        # The emulator lost its state (or someone redeployed): same name, new stream, numbering restarts.
        client.delete_stream(StreamName=stream)
        client.get_waiter("stream_not_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
        provision(provisioned)
        fresh = put(client, stream, [todays_event(i) for i in range(200, 203)])

        requests, new_cursor, notes = _tick(kinesis, cursor, instance)
        errors = [line for level, line in notes if level == "error"]
        assert len(errors) == 1 and "re-created" in errors[0] and old_identity["created"] in errors[0]
        assert new_cursor["stream"] != old_identity
        (request,) = requests
        assert request.tags["appdata/first_sequence"] == fresh[0]["SequenceNumber"]
        assert request.tags["appdata/last_sequence"] == fresh[-1]["SequenceNumber"]

        # The next tick has nothing more to say: the new identity is the saved one.
        again, _, notes = _tick(kinesis, json.loads(json.dumps(new_cursor)), instance)
        assert again == [] and not [line for level, line in notes if level == "error"]


def test_sensor_saves_the_stream_identity_in_its_cursor(provisioned):
    from appdata.defs.stream.sensor import kinesis_drain_sensor

    kinesis = provisioned["kinesis"]
    with dg.instance_for_test() as instance:
        result = kinesis_drain_sensor(dg.build_sensor_context(instance=instance, resources={"kinesis": kinesis}))
    saved = json.loads(result.cursor)["stream"]
    assert saved == stream_identity(kinesis.get_client(), kinesis.stream_name)
    assert saved["arn"].endswith(f":stream/{kinesis.stream_name}")


def test_a_failed_run_blocks_nothing_else_on_other_streams(provisioned):
    """Retries are per shard of this stream: a failed run of another stream's shard is not ours."""
    kinesis = provisioned["kinesis"]
    put(kinesis.get_client(), kinesis.stream_name, [todays_event(i) for i in range(3)])
    with dg.instance_for_test() as instance:
        instance.add_run(dg.DagsterRun(job_name="stream_drain_job", run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                       status=dg.DagsterRunStatus.FAILURE,
                                       tags={"appdata/shard": "another-stream.shardId-000000000000"}))
        requests, _, notes = _tick(kinesis, {"shards": {}, "ended": []}, instance)
    assert len(requests) == 1 and requests[0].tags[ATTEMPT_TAG] == "1"
    assert not [line for level, line in notes if level != "info"]
