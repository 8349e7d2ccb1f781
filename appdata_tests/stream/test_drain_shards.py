"""KCL-style shard handling with botocore's Stubber (moto never closes a shard): closed shards
end at a null NextShardIterator, a child is read only after its parents are delivered to their
end, expired iterators are renewed after the last record, throttling is botocore's to retry."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from appdata.stream.consumer import ShardConsumer
from appdata.stream.drain import read_shard, shard_order
from appdata.stream.leases import LeaseTable
from appdata_tests.support.stream import consumer_sinks

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


def test_a_child_is_not_read_until_its_closed_parent_is_delivered_to_its_end(stubbed, provisioned):
    client, stubber = stubbed
    leases = LeaseTable(provisioned["dynamodb"].get_client(), provisioned["dynamodb"].lease_table_name, STREAM)
    sinks = consumer_sinks(provisioned)

    def consumer(shard_id: str, parents: list[str], ranges: list) -> ShardConsumer:
        return ShardConsumer(kinesis=client, stream=STREAM, shard_id=shard_id, parents=parents, leases=leases,
                             owner="test", sinks=sinks, created="c", on_range=ranges.append,
                             sleep=lambda seconds: None)

    child_ranges: list = []
    early = consumer("shardId-1", ["shardId-0"], child_ranges).run(stop_when_caught_up=True)
    assert child_ranges == [] and "KCL order" in early.notes[-1]  # no Kinesis call was stubbed: none was made

    parent_ranges: list = []
    iterator(stubber, "shardId-0", "TRIM_HORIZON")
    records(stubber, ["41", "42"], None)  # the parent's last records, then its end
    parent = consumer("shardId-0", [], parent_ranges).run(stop_when_caught_up=True)
    assert parent.shard_end and [(r.first_sequence, r.last_sequence) for r in parent_ranges] == [("41", "42")]
    assert leases.get("shardId-0").shard_end and leases.get("shardId-0").checkpoint == "42"

    iterator(stubber, "shardId-1", "TRIM_HORIZON")
    records(stubber, ["50"], "next")
    records(stubber, [], "next")
    consumer("shardId-1", ["shardId-0"], child_ranges).run(stop_when_caught_up=True)
    assert [(r.first_sequence, r.last_sequence) for r in child_ranges] == [("50", "50")]
    assert consumer("shardId-0", [], parent_ranges).run().shard_end  # delivered: never read again
