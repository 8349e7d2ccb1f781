"""The stream into the lake's Iceberg table, against the emulator: every accepted event once,
whatever is committed twice, repeated by a client, or left in the buffer of a consumer that died."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from appdata.lake import tables
from appdata.stream.consumer import ShardConsumer, stream_created
from appdata.stream.drain import list_shards
from appdata.stream.table_writer import StreamTableWriter, sync_stream_table
from appdata_tests.support.events import make_event
from appdata_tests.support.stream import consumer_sinks, drain_all, forgotten_users, lease_table, put

pytestmark = pytest.mark.emulator


@pytest.fixture()
def world(provisioned):
    engine = provisioned["warehouse"].get_engine()
    yield provisioned, engine, provisioned["kinesis"].get_client(), provisioned["kinesis"].stream_name
    engine.dispose()


def stream_ids(table) -> list[str]:
    table.refresh()
    return tables.scan(table, source=tables.STREAM, columns=("event_id",)).column("event_id").to_pylist()


def accepted_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT event_id FROM downloads_stream")]


def events(start: int, count: int) -> list[dict]:
    return [make_event(n, day="2020-01-0%d" % (1 + n % 3), with_id=True) for n in range(start, start + count)]


def test_drained_events_reach_the_table_once_and_a_second_sync_adds_nothing(world):
    resources, engine, kinesis, stream = world
    first = events(0, 120)
    poison = [b"not json", {**make_event(999, with_id=True), "age": 7}]
    put(kinesis, stream, first + poison + first[:30])  # 30 client retries of the same events
    drain_all(resources, engine)
    table = resources["lake_table"].open()

    commits = sync_stream_table(resources["lake_table"].open, kinesis, stream, lease_table(resources),
                                forgotten_users(resources))
    assert sum(c.rows for c in commits) == 120
    assert sorted(stream_ids(table)) == sorted(accepted_ids(engine)) == sorted(e["event_id"] for e in first)

    assert sync_stream_table(resources["lake_table"].open, kinesis, stream, lease_table(resources),
                             forgotten_users(resources)) == []
    assert len(stream_ids(table)) == 120


def test_a_consumer_that_dies_with_rows_buffered_loses_nothing_and_doubles_nothing(world):
    resources, engine, kinesis, stream = world
    (shard,) = list_shards(kinesis, stream)
    leases = lease_table(resources)

    def writer() -> StreamTableWriter:
        return StreamTableWriter(open_table=resources["lake_table"].open, kinesis=kinesis, stream=stream,
                                 shard_id=shard["ShardId"], delivered=lambda: leases.get(shard["ShardId"]).checkpoint)

    def consume(on_range, owner: str) -> None:
        ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard["ShardId"], parents=[], leases=leases,
                      owner=owner, sinks=consumer_sinks(resources, engine), created=stream_created(kinesis, stream),
                      on_range=on_range).run(stop_when_caught_up=True)

    committed = writer()
    put(kinesis, stream, events(0, 50))
    consume(committed.add, "first")
    assert committed.commit().rows == 50

    dying = writer()  # drains and buffers, then dies before its commit
    put(kinesis, stream, events(50, 40))
    consume(dying.add, "dying")
    assert len(stream_ids(resources["lake_table"].open())) == 50

    successor = writer()
    put(kinesis, stream, events(90, 10) + events(60, 5))  # 10 new events and 5 repeats of buffered ones
    consume(successor.add, "successor")
    outcome = successor.commit()
    assert (outcome.rows, outcome.recovered_rows) == (50, 40)
    ids = stream_ids(resources["lake_table"].open())
    assert sorted(ids) == sorted(accepted_ids(engine)) == sorted(e["event_id"] for e in events(0, 100))

    # The dead consumer's buffer committed late (a stalled process that wakes up): nothing doubles.
    assert dying.commit() is None
    assert len(stream_ids(resources["lake_table"].open())) == 100


def test_a_commit_repeated_after_another_writer_committed_the_same_range_adds_nothing(world):
    resources, _, _, stream = world
    table = resources["lake_table"].open()
    rows = tables.with_provenance(
        tables.events_from_frame(_frame(events(0, 10))), source=tables.STREAM,
        ingested_at=dt.datetime.now(dt.timezone.utc), shard_id="shardId-000000000000",
        sequence_numbers=[str(10**55 + n) for n in range(10)], arrived_at=[None] * 10)
    stale = resources["lake_table"].open()  # a second writer's handle, loaded before the first commits
    assert tables.append_stream(table, stream, [tables.StreamBatch("shardId-000000000000", str(10**55 + 5),
                                                                   rows.slice(0, 6))]) == 6
    assert tables.append_stream(stale, stream, [tables.StreamBatch("shardId-000000000000", str(10**55 + 9),
                                                                   rows)]) == 4
    assert sorted(stream_ids(table)) == sorted(rows.column("event_id").to_pylist())
    assert tables.stream_marks(table, stream) == {"shardId-000000000000": str(10**55 + 9)}


def _frame(records: list[dict]):
    from appdata.contract import schema

    validation = schema.validate_records(schema.records_to_frame(records), first_row=0)
    assert validation.rejected.empty
    return validation.valid


def test_batch_days_are_replaced_not_appended(world):
    resources, _, _, _ = world
    table = resources["lake_table"].open()
    days = [dt.date(2020, 1, 1), dt.date(2020, 1, 2), dt.date(2020, 1, 3)]
    now = dt.datetime.now(dt.timezone.utc)
    first = tables.with_provenance(tables.events_from_frame(_frame(events(0, 30))), source=tables.BATCH, ingested_at=now)
    second = tables.with_provenance(tables.events_from_frame(_frame(events(100, 12))), source=tables.BATCH,
                                    ingested_at=now)
    tables.replace_batch_days(table, days, first)
    tables.replace_batch_days(table, days, first)
    assert tables.scan(table, source=tables.BATCH).num_rows == 30
    tables.replace_batch_days(table, days, second)
    held = tables.scan(table, source=tables.BATCH, columns=("event_id",)).column("event_id").to_pylist()
    assert sorted(held) == sorted(second.column("event_id").to_pylist())
    assert pa.compute.max(tables.scan(table, start=days[0], end=days[0] + dt.timedelta(days=1),
                                      columns=("download_date",)).column("download_date")).as_py() == days[0]


def test_reconciliation_names_an_event_deleted_from_the_table_and_one_held_twice(world):
    from pyiceberg.expressions import EqualTo

    from appdata.reliability.lake_table import reconcile_lake_table

    resources, engine, kinesis, stream = world
    put(kinesis, stream, events(0, 30))
    drain_all(resources, engine)
    table = resources["lake_table"].open()

    def sync():
        return sync_stream_table(lambda: table, kinesis, stream, lease_table(resources), forgotten_users(resources))

    assert all(r.ok for r in reconcile_lake_table(table, engine, sync))  # the first sync brings the rows

    gone, twice = events(0, 30)[4]["event_id"], events(0, 30)[5]["event_id"]
    table.delete(EqualTo("event_id", gone))
    held = tables.scan(table)
    table.append(held.filter(pa.compute.equal(held.column("event_id"), twice)))
    failing = [r for r in reconcile_lake_table(table, engine, sync) if not r.ok]
    assert [(r.pipeline, r.day, r.failing[0].missing, r.failing[0].duplicated) for r in failing] == [
        ("lake stream", "2020-01-02", [gone], []), ("lake stream", "2020-01-03", [], [twice])]
    assert gone in " ".join(r.describe() for r in failing) and twice in " ".join(r.describe() for r in failing)
