"""The shard consumer against the emulator: every record once in every sink, resumption from the
checkpoint, a pending range drained again with the same bounds, a held lease respected, the
hand-over at a deadline, and a re-created stream read from its start. Clocks and sleeps are
injected, so no verdict depends on timing."""

from __future__ import annotations

import pytest

from appdata.stream.consumer import ShardConsumer, stream_created
from appdata.stream.drain import list_shards
from appdata.local.provision import ensure_table
from appdata.warehouse.loader import count_rows
from appdata_tests.support.events import todays_event
from appdata_tests.support.stream import consumer_sinks, drain_all, dynamo_items, lake_state, lease_table, put


@pytest.fixture()
def world(provisioned):
    engine = provisioned["warehouse"].get_engine()
    kinesis = provisioned["kinesis"].get_client()
    yield provisioned, engine, kinesis, provisioned["kinesis"].stream_name
    engine.dispose()


def downloads(resources) -> int:
    return sum(1 for item in dynamo_items(resources["dynamodb"].get_client(), resources["dynamodb"].table_name)
               if item["sk"]["S"].startswith("DL#"))


def lake_events(resources) -> list[str]:
    return [line["event_id"] for lines in lake_state(resources["s3"].get_client(), resources["s3"].bucket).values()
            for line in lines]


def consumer(resources, engine, kinesis, stream, owner: str, **kwargs) -> ShardConsumer:
    (shard,) = list_shards(kinesis, stream)
    return ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard["ShardId"], parents=[],
                         leases=lease_table(resources), owner=owner, sinks=consumer_sinks(resources, engine),
                         created=stream_created(kinesis, stream), **kwargs)


def test_every_record_lands_once_and_the_next_consumer_resumes_at_the_checkpoint(world):
    resources, engine, kinesis, stream = world
    first = put(kinesis, stream, [todays_event(i) for i in range(300)])
    (result,) = drain_all(resources, engine)
    assert (result.first_sequence, result.last_sequence, result.valid) == (
        first[0]["SequenceNumber"], first[-1]["SequenceNumber"], 300)
    assert lease_table(resources).get(result.shard_id).checkpoint == first[-1]["SequenceNumber"]

    later = put(kinesis, stream, [todays_event(i) for i in range(300, 350)])
    (resumed,) = drain_all(resources, engine)
    assert (resumed.first_sequence, resumed.records) == (later[0]["SequenceNumber"], 50)
    assert drain_all(resources, engine) == []
    assert count_rows(engine, "downloads_stream") == downloads(resources) == 350
    assert sorted(lake_events(resources)) == sorted({e for e in lake_events(resources)}) and len(lake_events(resources)) == 350
    assert lease_table(resources).get(result.shard_id).owner is None  # each consumer released its lease


def test_a_range_left_pending_is_drained_again_with_its_own_bounds_and_nothing_doubles(world):
    resources, engine, kinesis, stream = world
    first = put(kinesis, stream, [todays_event(i) for i in range(40)])
    dynamodb = resources["dynamodb"]  # DynamoDB fails this range after the lake took it
    dynamodb.get_client().delete_table(TableName=dynamodb.table_name)
    failing = consumer(resources, engine, kinesis, stream, "failing", sleep=lambda seconds: None)
    with pytest.raises(Exception, match="ResourceNotFound"):
        failing.run(stop_when_caught_up=True)
    lease = lease_table(resources).get(failing.shard_id)
    assert lease.pending == (first[0]["SequenceNumber"], first[-1]["SequenceNumber"]) and lease.checkpoint is None
    assert lease.owner is None  # released on the way out
    lake_after_failure = set(lake_state(resources["s3"].get_client(), resources["s3"].bucket))
    assert len(lake_after_failure) == 1

    ensure_table(dynamodb)  # DynamoDB is back, and more records arrived meanwhile
    later = put(kinesis, stream, [todays_event(i) for i in range(40, 55)])
    results = drain_all(resources, engine)
    assert [(r.first_sequence, r.last_sequence) for r in results] == [
        (first[0]["SequenceNumber"], first[-1]["SequenceNumber"]),
        (later[0]["SequenceNumber"], later[-1]["SequenceNumber"])]
    lake = lake_state(resources["s3"].get_client(), resources["s3"].bucket)
    assert lake_after_failure < set(lake) and len(lake) == 2  # the same object rewritten, not a re-cut copy
    assert count_rows(engine, "downloads_stream") == downloads(resources) == len(lake_events(resources)) == 55


def test_a_shard_whose_lease_another_consumer_holds_is_left_to_it(world):
    resources, engine, kinesis, stream = world
    put(kinesis, stream, [todays_event(i) for i in range(10)])
    shard_id = list_shards(kinesis, stream)[0]["ShardId"]
    assert lease_table(resources).acquire(shard_id, "running-consumer", lease_seconds=600) is not None
    assert drain_all(resources, engine) == []
    assert count_rows(engine, "downloads_stream") == downloads(resources) == 0
    assert lease_table(resources).get(shard_id).owner == "running-consumer"


def test_a_successor_waits_for_the_lease_and_goes_on_from_its_predecessors_checkpoint(world):
    resources, engine, kinesis, stream = world
    put(kinesis, stream, [todays_event(i) for i in range(20)])
    (done,) = drain_all(resources, engine)
    leases = lease_table(resources)
    leases.acquire(done.shard_id, "predecessor", lease_seconds=600)
    later = put(kinesis, stream, [todays_event(i) for i in range(20, 30)])
    waited: list[float] = []
    ranges = []

    def sleep(seconds: float) -> None:  # the predecessor reaches its deadline while the successor waits
        waited.append(seconds)
        if len(waited) == 2:
            leases.release(done.shard_id, "predecessor")

    successor = consumer(resources, engine, kinesis, stream, "successor", sleep=sleep, on_range=ranges.append)
    summary = successor.run(stop_when_caught_up=True, wait_for_lease_seconds=float("inf"))
    assert summary.lease_taken and len(waited) >= 2
    assert [(r.first_sequence, r.records) for r in ranges] == [(later[0]["SequenceNumber"], 10)]
    assert count_rows(engine, "downloads_stream") == downloads(resources) == 30


def test_a_consumer_stops_at_its_deadline_between_ranges_and_hands_over_its_position(world):
    resources, engine, kinesis, stream = world
    first = put(kinesis, stream, [todays_event(i) for i in range(25)])
    now = [1_000.0]
    arrived: list[dict] = []

    def on_range(result) -> None:  # while the range was written, the deadline passed and more arrived
        now[0] = 2_000.0
        arrived.extend(put(kinesis, stream, [todays_event(i) for i in range(25, 35)]))

    bounded = consumer(resources, engine, kinesis, stream, "bounded", clock=lambda: now[0],
                       sleep=lambda seconds: None, on_range=on_range)
    summary = bounded.run(until=1_500.0)
    assert (summary.ranges, summary.records) == (1, 25)
    lease = lease_table(resources).get(bounded.shard_id)
    assert (lease.owner, lease.checkpoint) == (None, first[-1]["SequenceNumber"])
    (rest,) = drain_all(resources, engine)
    assert (rest.first_sequence, rest.records) == (arrived[0]["SequenceNumber"], 10)


def test_a_checkpoint_of_a_re_created_stream_is_said_loudly_and_the_new_one_read_from_its_start(world):
    resources, engine, kinesis, stream = world
    put(kinesis, stream, [todays_event(i) for i in range(12)])
    shard_id = list_shards(kinesis, stream)[0]["ShardId"]
    leases = lease_table(resources)
    leases.acquire(shard_id, "old", lease_seconds=60)
    leases.reset(shard_id, "old", "2020-01-01T00:00:00+00:00")  # the incarnation the checkpoint belongs to
    leases.commit_range(shard_id, "old", "99999999")
    leases.release(shard_id, "old")
    notes: list[tuple[str, str]] = []
    ranges = []
    consumer(resources, engine, kinesis, stream, "new", on_note=lambda level, text: notes.append((level, text)),
             on_range=ranges.append).run(stop_when_caught_up=True)
    assert any(level == "error" and "another incarnation" in text for level, text in notes)
    assert sum(r.records for r in ranges) == 12 and count_rows(engine, "downloads_stream") == 12


@pytest.mark.emulator
def test_a_checkpoint_past_a_rolled_back_streams_end_is_said_loudly_and_appdata_drain_skips_nothing(
        appdata_env, tmp_path, monkeypatch):
    """Kinesis in an emulator process of its own, rolled back: its state restored from an older
    snapshot (the write-ahead log gone), after the drain checkpointed records the old snapshot
    lacks. The records it accepts next take those sequence numbers, past the checkpoint too;
    `appdata drain` says the checkpoint is another record now, and delivers all of them."""
    from click.testing import CliRunner

    from appdata.cli.stream import drain
    from appdata.config import Settings, endpoint_variable
    from appdata.defs.resources import build_resources
    from appdata.local.provision import provision
    from appdata_tests.support.emulator import KinesisProcess

    state = tmp_path / "state"
    emulator = KinesisProcess(state, appdata_env)
    emulator.start()
    try:
        monkeypatch.setenv(endpoint_variable("kinesis"), emulator.server.endpoint)
        resources = build_resources(Settings.from_env())
        provision(resources)
        kinesis, stream = resources["kinesis"].get_client(), resources["kinesis"].stream_name
        put(kinesis, stream, [todays_event(i) for i in range(20)])
        emulator.stop()
        older = (state / "kinesis.pickle").read_bytes()  # 20 records
        emulator.start()
        put(kinesis, stream, [todays_event(i) for i in range(20, 40)])
        (delivered,) = drain_all(resources)
        assert delivered.last_sequence == "40"
        emulator.kill()
        (state / "kinesis.pickle").write_bytes(older)
        (state / "kinesis.wal").unlink()
        emulator.start()
        accepted = put(kinesis, stream, [todays_event(i) for i in range(100, 130)])
        assert [accepted[0]["SequenceNumber"], accepted[-1]["SequenceNumber"]] == ["21", "50"]  # past 40 too

        out = CliRunner().invoke(drain, [])
        assert out.exit_code == 0, out.output
        engine = resources["warehouse"].get_engine()
        try:
            assert count_rows(engine, "downloads_stream") == downloads(resources) == 70
        finally:
            engine.dispose()
        assert "checkpoint 40 (a record that arrived at " in out.output and "is another record now" in out.output
        assert "from after 20" in out.output
        lease = lease_table(resources).get(delivered.shard_id)
        assert (lease.checkpoint, lease.pending) == ("50", None)
    finally:
        if emulator.proc.poll() is None:
            emulator.kill()


def test_follow_up_work_takes_every_user_queued_since_its_last_pass_and_reports_failures():
    import threading

    from appdata.stream.consumer import FollowUp

    started, release = threading.Event(), threading.Event()
    passes: list[list[int]] = []
    errors: list[tuple[list[int], str]] = []

    def work(users: list[int]) -> int:
        started.set()
        release.wait()  # the first pass is slow: what arrives meanwhile waits for the next one
        passes.append(users)
        if 13 in users:
            raise RuntimeError("recommender down")
        return len(users)

    done: list[tuple[list[int], int]] = []
    follow_up = FollowUp(work, on_done=lambda users, written, seconds: done.append((users, written)),
                         on_error=lambda users, exc: errors.append((users, str(exc))))
    follow_up.add([3, 1])
    follow_up.add([])  # nothing to do: not queued
    assert started.wait(timeout=10)  # the first pass has taken [1, 3] and waits in work()
    follow_up.add([2, 1])
    follow_up.add([13])
    release.set()
    follow_up.close(timeout=10)
    assert passes == [[1, 3], [1, 2, 13]]
    assert done == [([1, 3], 2)] and errors == [([1, 2, 13], "recommender down")]


def test_a_consumer_whose_lease_was_taken_over_stops_without_writing_more_and_without_failing(world):
    resources, engine, kinesis, stream = world
    put(kinesis, stream, [todays_event(i) for i in range(10)])
    leases = lease_table(resources)
    notes: list[tuple[str, str]] = []

    def on_range(result) -> None:  # it stalled here past its lease, and a successor took the shard
        dynamodb = resources["dynamodb"].get_client()
        dynamodb.update_item(TableName=resources["dynamodb"].lease_table_name,
                             Key={"shard": {"S": f"{stream}/{result.shard_id}"}},
                             UpdateExpression="SET #o = :other", ExpressionAttributeNames={"#o": "owner"},
                             ExpressionAttributeValues={":other": {"S": "successor"}})
        put(kinesis, stream, [todays_event(i) for i in range(10, 20)])

    stalled = consumer(resources, engine, kinesis, stream, "stalled", on_range=on_range, sleep=lambda s: None,
                       on_note=lambda level, text: notes.append((level, text)))
    summary = stalled.run(stop_when_caught_up=True)
    assert summary.lease_lost and summary.records == 10
    assert any(level == "warning" and "no longer stalled's" in text for level, text in notes)
    assert count_rows(engine, "downloads_stream") == 10  # the later records are the successor's to write
    assert leases.get(stalled.shard_id).owner == "successor"
