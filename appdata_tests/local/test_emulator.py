"""The emulator: real single-threaded servers on loopback, one process per service, each answering
its own service only and keeping its own state file across a restart."""

import concurrent.futures as cf
import dataclasses
import os
import signal
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from appdata import aws
from appdata.config import AwsEndpoints, Settings, aws_client_kwargs, endpoint_variable
from appdata.defs.resources import build_resources
from appdata.local.emulator import ALL_SERVICES, emulator_layout, emulator_process, free_endpoints, wait_until_up
from appdata.local.provision import provision
from appdata_tests.support.emulator import KinesisProcess


def test_emulator_keeps_every_concurrent_kinesis_write(provisioned, appdata_env):
    """8 producers x 250 records at once: the single-threaded server stores all of them."""
    client = provisioned["kinesis"].get_client()

    def produce(producer: int) -> int:
        own = provisioned["kinesis"].get_client()
        for batch in range(5):
            records = [{"Data": f"{producer}-{batch}-{i}".encode(), "PartitionKey": str(i)} for i in range(50)]
            assert own.put_records(StreamName=appdata_env.stream, Records=records)["FailedRecordCount"] == 0
        return 250

    with cf.ThreadPoolExecutor(8) as pool:
        sent = sum(pool.map(produce, range(8)))
    shard = client.list_shards(StreamName=appdata_env.stream)["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(StreamName=appdata_env.stream, ShardId=shard,
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    seen, sequences = [], set()
    while True:
        page = client.get_records(ShardIterator=iterator, Limit=10000)
        seen.extend(r["Data"] for r in page["Records"])
        sequences.update(r["SequenceNumber"] for r in page["Records"])
        if not page["Records"]:
            break
        iterator = page["NextShardIterator"]
    assert sent == 2000
    assert len(seen) == 2000 and len(set(seen)) == 2000
    assert len(sequences) == 2000


# What each service's process is asked, to find this test's resource (or to be refused).
LOOKUPS = {
    "s3": lambda client, settings: client.list_objects_v2(Bucket=settings.bucket),
    "kinesis": lambda client, settings: client.describe_stream_summary(StreamName=settings.stream),
    "dynamodb": lambda client, settings: client.describe_table(TableName=settings.table),
}


def test_each_service_is_reached_at_its_own_process_and_no_other(provisioned, appdata_env):
    """The resources' clients go to their own service's endpoint, where provisioning created the
    bucket, stream and table; every other process refuses that service (it holds none of it)."""
    endpoints = appdata_env.aws_endpoints
    assert len(set(endpoints.by_service().values())) == 4
    for service, lookup in LOOKUPS.items():
        client = provisioned[service].get_client()
        assert client.meta.endpoint_url == endpoints.url(service)
        lookup(client, appdata_env)  # there
        for other, elsewhere in endpoints.by_service().items():
            if other == service:
                continue
            misdirected = aws.client(service, **{**aws_client_kwargs(appdata_env, service), "endpoint_url": elsewhere})
            with pytest.raises(ClientError) as refused:
                lookup(misdirected, appdata_env)
            assert aws.error_code(refused.value) == "MisdirectedRequest"
            assert endpoint_variable(service) in str(refused.value)


def test_other_services_are_served_by_the_others_process(appdata_env):
    others = aws.client("cloudformation", **aws_client_kwargs(appdata_env, "cloudformation"))
    assert others.meta.endpoint_url == appdata_env.aws_endpoints.others
    assert "StackSummaries" in others.list_stacks()


def test_layout_is_one_process_per_distinct_loopback_endpoint():
    per_service = AwsEndpoints.emulator(4566)
    assert [(s.port, s.services) for s in emulator_layout(per_service)] == [
        (4567, ("s3",)), (4568, ("kinesis",)), (4569, ("dynamodb",)), (4566, ("others",))]
    single = emulator_layout(AwsEndpoints.everything_at("http://127.0.0.1:5000"))
    assert [(s.port, s.services) for s in single] == [(5000, ALL_SERVICES)]
    real_s3 = dataclasses.replace(per_service, s3=None)
    assert [s.services for s in emulator_layout(real_s3)] == [("kinesis",), ("dynamodb",), ("others",)]
    assert emulator_layout(AwsEndpoints.everything_at(None)) == []


def _on(settings: Settings, endpoints: AwsEndpoints) -> dict:
    return build_resources(dataclasses.replace(settings, aws_endpoints=endpoints))


def _store_one_of_each(resources: dict, settings: Settings) -> None:
    provision(resources)
    resources["s3"].get_client().put_object(Bucket=settings.bucket, Key="kept", Body=b"kept")
    resources["kinesis"].get_client().put_record(StreamName=settings.stream, Data=b"kept", PartitionKey="k")
    resources["dynamodb"].get_client().put_item(TableName=settings.table, Item=aws.to_item(
        {"user_id": "1", "sk": "kept"}))


def _kinesis_data(resources: dict, settings: Settings) -> list[bytes]:
    kinesis = resources["kinesis"].get_client()
    shard = kinesis.list_shards(StreamName=settings.stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=settings.stream, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return [record["Data"] for record in kinesis.get_records(ShardIterator=iterator)["Records"]]


@pytest.mark.emulator
def test_each_service_keeps_its_own_state_file_across_a_restart(tmp_path, offline_env):
    state = tmp_path / "state"
    with emulator_process(state_dir=state) as endpoints:
        _store_one_of_each(_on(offline_env, endpoints), offline_env)
    assert sorted(path.name for path in state.iterdir()) == [
        "dynamodb.pickle", "kinesis.pickle", "kinesis.wal", "s3.pickle"]

    with emulator_process(state_dir=state) as endpoints:  # new processes, new ports, same state directory
        resources = _on(offline_env, endpoints)
        body = resources["s3"].get_client().get_object(Bucket=offline_env.bucket, Key="kept")["Body"].read()
        assert body == b"kept"
        assert _kinesis_data(resources, offline_env) == [b"kept"]
        items = list(aws.scan_items(resources["dynamodb"].get_client(), offline_env.table))
        assert [aws.from_item(item) for item in items] == [{"user_id": "1", "sk": "kept"}]


@pytest.mark.emulator
def test_the_single_process_layouts_state_file_is_carried_over_on_upgrade(tmp_path, offline_env):
    """An APPDATA_HOME from before one process per service keeps its stream, table and bucket."""
    import pickle

    state = tmp_path / "state"
    with emulator_process(state_dir=state) as endpoints:
        _store_one_of_each(_on(offline_env, endpoints), offline_env)
    combined = {}
    for path in list(state.glob("*.pickle")):  # the older layout: every service in one file
        combined[path.stem] = pickle.loads(path.read_bytes())
        path.unlink()
    (state / "emulator-state.pickle").write_bytes(pickle.dumps(combined))

    with emulator_process(state_dir=state) as endpoints:
        resources = _on(offline_env, endpoints)
        assert resources["s3"].get_client().get_object(Bucket=offline_env.bucket, Key="kept")["Body"].read() == b"kept"
        assert _kinesis_data(resources, offline_env) == [b"kept"]
        assert list(aws.scan_items(resources["dynamodb"].get_client(), offline_env.table))


@pytest.mark.emulator
def test_a_torn_state_file_is_set_aside_and_only_its_service_starts_empty(tmp_path, offline_env):
    state = tmp_path / "state"
    with emulator_process(state_dir=state) as endpoints:
        _store_one_of_each(_on(offline_env, endpoints), offline_env)
    torn = state / "kinesis.pickle"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])

    with emulator_process(state_dir=state) as endpoints:
        resources = _on(offline_env, endpoints)
        with pytest.raises(ClientError) as gone:
            resources["kinesis"].get_client().describe_stream_summary(StreamName=offline_env.stream)
        assert aws.error_code(gone.value) == "ResourceNotFoundException"
        assert resources["s3"].get_client().get_object(Bucket=offline_env.bucket, Key="kept")["Body"].read() == b"kept"
        assert list(aws.scan_items(resources["dynamodb"].get_client(), offline_env.table))
    assert [path.name.split("-")[0] for path in state.glob("kinesis.unreadable-*")] == ["kinesis.unreadable"]


def test_a_state_file_that_unpickles_to_something_else_is_set_aside_too(tmp_path):
    """A pickle that loads but is not moto's accounts (a hand-made or foreign file) starts that
    service empty with the reason, as a torn file does, instead of crashing every process."""
    import pickle

    from appdata.local.emulator import EmulatorState

    path = tmp_path / "dynamodb.pickle"
    path.write_bytes(pickle.dumps([1, 2]))
    note = EmulatorState._load("dynamodb", path)
    assert note.startswith(f"could not read {path} (TypeError(\"it holds a list, not moto's accounts\"))")
    assert note.endswith("and started EMPTY")
    assert not path.exists() and len(list(tmp_path.glob("dynamodb.unreadable-*"))) == 1


@pytest.mark.emulator
def test_appdata_emulator_serves_the_configured_layout_and_stops_each_process_on_sigint(tmp_path, offline_env):
    """`appdata emulator` (as `appdata up` runs it): a process per configured endpoint; on SIGINT
    each finishes, writes its snapshot, and the command exits 0."""
    endpoints = free_endpoints()
    env = {**os.environ, **endpoints.environment()}
    state = tmp_path / "state"
    launcher = subprocess.Popen([sys.executable, "-m", "appdata.cli", "emulator", "--state-dir", str(state)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for server in emulator_layout(endpoints):
            wait_until_up(server.endpoint)
        _store_one_of_each(_on(offline_env, endpoints), offline_env)
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0
    assert sorted(line.split(" listening")[0] for line in output.splitlines()) == sorted(
        f"AWS emulator for {service}" for service in ALL_SERVICES)
    assert sorted(path.name for path in state.iterdir()) == [
        "dynamodb.pickle", "kinesis.pickle", "kinesis.wal", "s3.pickle"]


def test_kinesis_shards_at_stream_scale_give_the_answers_moto_gives():
    """The emulator's GetRecords (bisection over the shard's sequence numbers) and shard ends
    against moto's own walks over every record, on one shard, at every position and several limits,
    as it grows, with records apart in time (MillisBehindLatest is not always 0)."""
    import datetime

    from moto.kinesis.models import Shard

    from appdata.local.emulator import kinesis_shards_at_stream_scale

    moto_get_records, moto_max, moto_min = (Shard.get_records, Shard.get_max_sequence_number,
                                            Shard.get_min_sequence_number)
    shard = Shard(0, 0, 2**128)
    try:
        assert kinesis_shards_at_stream_scale().endswith("Kinesis reads by bisection (checked against moto's own answers)")
        assert Shard.get_records is not moto_get_records
        assert (shard.get_max_sequence_number(), shard.get_min_sequence_number()) == (0, 0)
        for batch in range(3):  # records arrive between reads, as a producer adds them
            for index in range(40):
                shard.put_record("k", "data", "1")
                record = shard.records[next(reversed(shard.records))]
                earlier = (40 - index) * 0.25  # seconds
                record.created_at -= (datetime.timedelta(seconds=earlier)
                                      if isinstance(record.created_at, datetime.datetime) else earlier)
            last = int(next(reversed(shard.records)))
            assert (shard.get_max_sequence_number(), shard.get_min_sequence_number()) == (
                moto_max(shard), moto_min(shard))
            for position in range(0, last + 2):
                for limit in (None, 1, 7, 10_000):
                    ours = shard.get_records(str(position), limit)
                    theirs = moto_get_records(shard, str(position), limit)
                    assert ([r.sequence_number for r in ours[0]], ours[1], ours[2]) == \
                        ([r.sequence_number for r in theirs[0]], theirs[1], theirs[2]), (batch, position, limit)
        assert shard.get_records("0", 1)[2] > 0
    finally:
        Shard.get_records, Shard.get_max_sequence_number, Shard.get_min_sequence_number = (
            moto_get_records, moto_max, moto_min)


def test_records_restored_from_an_older_moto_mix_float_and_datetime_times():
    """moto 5.2.5 kept a record's arrival as epoch seconds, 5.2.6 as a naive UTC datetime: a shard
    restored from an old snapshot and appended to by the new moto still answers MillisBehindLatest."""
    import datetime

    from moto.kinesis.models import Shard

    from appdata.local.emulator import _fast_get_records

    shard = Shard(0, 0, 2**128)
    for _ in range(2):
        shard.put_record("k", "data", "1")
    newest = datetime.datetime(2026, 12, 7, 12, 0, 10)
    shard.records[1].created_at = newest.replace(tzinfo=datetime.timezone.utc).timestamp() - 2.5  # the old kind
    shard.records[2].created_at = newest
    records, last, behind = _fast_get_records(shard, "0", 1)
    assert ([r.sequence_number for r in records], last, behind) == ([1], 1, 2500)


def test_a_moto_that_answers_otherwise_keeps_its_own_kinesis_reads(monkeypatch):
    """The start-up check: when the installed moto's answers differ from the bisection's (a moto
    release that changed its model), the emulator keeps moto's own methods and says so, naming
    the version, instead of serving wrong answers or a 500 on every GetRecords."""
    import importlib.metadata

    from moto.kinesis.models import Shard

    from appdata.local.emulator import kinesis_shards_at_stream_scale

    def moto_reporting_seconds_behind(shard, last_sequence_id, limit):  # as if moto changed units
        records = [r for key, r in shard.records.items() if key > int(last_sequence_id)][:limit]
        return records, records[-1].sequence_number if records else int(last_sequence_id), 7

    monkeypatch.setattr(Shard, "get_records", moto_reporting_seconds_behind)
    note = kinesis_shards_at_stream_scale()
    assert Shard.get_records is moto_reporting_seconds_behind
    assert note.startswith(f"moto {importlib.metadata.version('moto')}: Kinesis reads use moto's own (slower) code")


def _records(kinesis, stream: str) -> list[tuple[str, bytes]]:
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return [(r["SequenceNumber"], r["Data"]) for r in kinesis.get_records(ShardIterator=iterator)["Records"]]


@pytest.mark.emulator
def test_kinesis_keeps_what_it_answered_through_a_sigkill(tmp_path, offline_env):
    """Each put is on disk before its answer: records a PutRecords or PutRecord was answered for
    are there after a SIGKILL right after the answer (long before a periodic snapshot), with their
    sequence numbers and arrival times; a stream created just before is there too. Then again after
    a restart: the records the log replayed, a snapshot, and the puts after it."""
    emulator = KinesisProcess(tmp_path / "state", offline_env)
    emulator.start()
    try:
        kinesis = emulator.client()
        kinesis.create_stream(StreamName=offline_env.stream, ShardCount=1)
        batch = kinesis.put_records(StreamName=offline_env.stream,
                                    Records=[{"Data": f"a{n}".encode(), "PartitionKey": "k"} for n in range(300)])
        single = kinesis.put_record(StreamName=offline_env.stream, Data=b"b", PartitionKey="k")
        emulator.kill()  # right after the answers
        answered = [(r["SequenceNumber"], f"a{n}".encode()) for n, r in enumerate(batch["Records"])]
        answered.append((single["SequenceNumber"], b"b"))

        started = emulator.start()
        kinesis = emulator.client()
        assert _records(kinesis, offline_env.stream) == answered
        assert "301 put(s) replayed from kinesis.wal" in started, started
        kinesis.put_records(StreamName=offline_env.stream, Records=[{"Data": b"c", "PartitionKey": "k"}])
        emulator.kill()

        emulator.start()
        kinesis = emulator.client()
        assert _records(kinesis, offline_env.stream) == [*answered, (str(int(answered[-1][0]) + 1), b"c")]
    finally:
        if emulator.proc.poll() is None:
            emulator.kill()


def test_the_kinesis_log_replays_only_what_the_snapshot_lacks_and_cuts_a_torn_tail(tmp_path):
    """A record logged and then snapshotted (the process died before the log was emptied) is not
    put twice; a torn last line, a put whose answer never left, is cut so the next appends are whole."""
    import json

    from moto.kinesis.models import Stream

    from appdata.local.emulator import KinesisLog

    log = KinesisLog(tmp_path / "kinesis.wal")
    live = Stream("s", 1, None, None, "123456789012", "us-east-1")
    put = log.logged(Stream.put_record)
    for n in range(3):
        put(live, "k", None, f"data-{n}")
    log.flush()
    restored = Stream("s", 1, None, None, "123456789012", "us-east-1")
    (shard_id,) = restored.shards
    first = json.loads(log.path.read_text().splitlines()[0])
    restored.shards[shard_id].put_record("k", "data-0", None)  # what a snapshot taken after the first put holds
    with open(log.path, "ab") as handle:
        handle.write(b'{"account": "1234')  # a torn append
    assert log.replay(lambda entry: restored) == (
        "2 put(s) replayed from kinesis.wal, 1 already in the snapshot; cut a torn tail of 17 byte(s) "
        "(a put that was never answered)")
    assert [(r.sequence_number, r.data) for r in restored.shards[shard_id].records.values()] == [
        (1, "data-0"), (2, "data-1"), (3, "data-2")]
    assert log.path.read_bytes().endswith(b"\n") and len(log.path.read_text().splitlines()) == 3
    assert first["sequence"] == 1
