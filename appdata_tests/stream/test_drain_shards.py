"""KCL-style shard handling with botocore's Stubber (moto never closes a shard): closed shards
end at a null NextShardIterator, children wait for their parents, expired iterators are
renewed after the last record, throttling is botocore's to retry."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from appdata.stream.drain import read_shard, shard_order
from appdata.defs.stream.sensor import load_cursor, plan_requests

STREAM = "s"
ARRIVAL = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)


@pytest.fixture()
def stubbed():
    client = boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def rec(seq: str) -> dict:
    return {"SequenceNumber": seq, "Data": json.dumps({"n": seq}).encode(), "PartitionKey": "1",
            "ApproximateArrivalTimestamp": ARRIVAL}


def shard(shard_id: str, *, parent: str | None = None, adjacent: str | None = None, closed: bool = False) -> dict:
    out = {"ShardId": shard_id, "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
           "SequenceNumberRange": {"StartingSequenceNumber": "1"}}
    if closed:
        out["SequenceNumberRange"]["EndingSequenceNumber"] = "999"
    if parent:
        out["ParentShardId"] = parent
    if adjacent:
        out["AdjacentParentShardId"] = adjacent
    return out


def iterator(stubber, shard_id: str, kind: str, seq: str | None = None, it: str = "it") -> None:
    params = {"StreamName": STREAM, "ShardId": shard_id, "ShardIteratorType": kind}
    if seq is not None:
        params["StartingSequenceNumber"] = seq
    stubber.add_response("get_shard_iterator", {"ShardIterator": it}, params)


def records(stubber, seqs: list[str], next_it: str | None, behind: int = 0) -> None:
    body = {"Records": [rec(s) for s in seqs], "MillisBehindLatest": behind}
    if next_it is not None:
        body["NextShardIterator"] = next_it
    stubber.add_response("get_records", body, {"ShardIterator": ANY, "Limit": ANY})


def test_closed_shard_ends_at_null_next_iterator(stubbed):
    client, stubber = stubbed
    iterator(stubber, "p", "TRIM_HORIZON")
    records(stubber, ["10", "11"], "it2", behind=1000)
    records(stubber, ["12"], None)  # closed shard: its end
    read = read_shard(client, STREAM, "p")
    assert [r["SequenceNumber"] for r in read.records] == ["10", "11", "12"]
    assert read.shard_end


def test_open_shard_stops_when_caught_up(stubbed):
    client, stubber = stubbed
    iterator(stubber, "a", "AFTER_SEQUENCE_NUMBER", "5")
    records(stubber, ["6"], "it2", behind=10)
    records(stubber, [], "it3", behind=0)
    read = read_shard(client, STREAM, "a", after="5")
    assert [r["SequenceNumber"] for r in read.records] == ["6"] and not read.shard_end and read.caught_up


def test_expired_iterator_is_renewed_after_the_last_record(stubbed):
    client, stubber = stubbed
    iterator(stubber, "a", "AT_SEQUENCE_NUMBER", "100")
    records(stubber, ["100", "101"], "old", behind=500)
    stubber.add_client_error("get_records", "ExpiredIteratorException", "Iterator expired")
    iterator(stubber, "a", "AFTER_SEQUENCE_NUMBER", "101", it="fresh")
    records(stubber, ["102", "103"], "it4")
    read = read_shard(client, STREAM, "a", at="100", until="103")
    assert [r["SequenceNumber"] for r in read.records] == ["100", "101", "102", "103"]


def test_throttling_is_left_to_botocore(stubbed):
    """One retry policy (appdata.aws): botocore's standard mode retries a throttled GetRecords in
    the client; the reader adds no loop of its own on top (the Stubber answers below botocore's retries)."""
    client, stubber = stubbed
    iterator(stubber, "a", "TRIM_HORIZON")
    stubber.add_client_error("get_records", "ProvisionedThroughputExceededException", "slow down")
    with pytest.raises(Exception, match="ProvisionedThroughputExceeded"):
        read_shard(client, STREAM, "a")


def test_parents_come_before_children():
    shards = [shard("c2", parent="p1", adjacent="p2"), shard("c1", parent="p1"), shard("p2", closed=True),
              shard("p1", closed=True)]
    order = [s["ShardId"] for s in shard_order(shards)]
    assert order.index("p1") < order.index("c1") and order.index("p1") < order.index("c2")
    assert order.index("p2") < order.index("c2")


def test_sensor_reads_a_split_parent_to_its_end_before_its_children(stubbed):
    client, stubber = stubbed
    topology = {"Shards": [shard("shardId-0", closed=True), shard("shardId-1", parent="shardId-0"),
                           shard("shardId-2", parent="shardId-0")]}

    # tick 1: the parent's remaining records and its end; children untouched
    stubber.add_response("list_shards", topology, {"StreamName": STREAM})
    iterator(stubber, "shardId-0", "AFTER_SEQUENCE_NUMBER", "40")
    records(stubber, ["41", "42"], None)
    requests, cursor, _ = plan_requests(client, STREAM, load_cursor(json.dumps({"shards": {"shardId-0": "40"}})))
    assert [r.run_key for r in requests] == [f"{STREAM}:shardId-0:41-42"]
    assert cursor == {"shards": {"shardId-0": "42"}, "ended": ["shardId-0"]}

    # tick 2: the parent is done, so both children are read from their start
    stubber.add_response("list_shards", topology, {"StreamName": STREAM})
    iterator(stubber, "shardId-1", "TRIM_HORIZON")
    records(stubber, ["50"], "x", behind=0)
    records(stubber, [], "y", behind=0)
    iterator(stubber, "shardId-2", "TRIM_HORIZON")
    records(stubber, [], "z", behind=0)
    requests, cursor, _ = plan_requests(client, STREAM, cursor)
    assert [r.run_key for r in requests] == [f"{STREAM}:shardId-1:50-50"]
    assert cursor == {"shards": {"shardId-0": "42", "shardId-1": "50"}, "ended": ["shardId-0"]}


def test_merged_child_waits_for_both_parents(stubbed):
    client, stubber = stubbed
    topology = {"Shards": [shard("a", closed=True), shard("b", closed=True), shard("m", parent="a", adjacent="b")]}
    stubber.add_response("list_shards", topology, {"StreamName": STREAM})
    # "a" already ended; "b" still has records and is not closed-through yet
    iterator(stubber, "b", "AFTER_SEQUENCE_NUMBER", "7")
    records(stubber, ["8"], "more", behind=100)
    records(stubber, [], "more2", behind=0)
    requests, cursor, _ = plan_requests(
        client, STREAM, load_cursor(json.dumps({"shards": {"a": "5", "b": "7"}, "ended": ["a"]})))
    assert [r.run_key for r in requests] == [f"{STREAM}:b:8-8"]
    assert cursor["ended"] == ["a"]  # m was not read: b is not at its end yet
