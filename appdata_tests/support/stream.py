"""Kinesis and the drain's sinks seen from a test: put records, read the stream back (whole, or as the
shard ranges a sensor would request), and list what the lake and DynamoDB hold."""

from __future__ import annotations

import gzip
import json
from typing import Any


def put(kinesis, stream: str, payloads: list[bytes | dict]) -> list[dict]:
    """PutRecords as a producer would (dicts as JSON, bytes as they are); the entries it answered."""
    entries = [{"Data": p if isinstance(p, bytes) else json.dumps(p).encode(),
                "PartitionKey": str(p["user_id"]) if isinstance(p, dict) else "x"} for p in payloads]
    out = []
    for start in range(0, len(entries), 500):
        response = kinesis.put_records(StreamName=stream, Records=entries[start:start + 500])
        assert response["FailedRecordCount"] == 0
        out.extend(response["Records"])
    return out


def read_stream(kinesis_client: Any, stream: str) -> list[dict[str, Any]]:
    """Every record currently in the stream, decoded, in shard order."""
    out: list[dict[str, Any]] = []
    for shard in kinesis_client.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis_client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = kinesis_client.get_records(ShardIterator=iterator, Limit=10000)
            out.extend({"data": json.loads(r["Data"]), "raw": r["Data"], "partition_key": r["PartitionKey"]}
                       for r in page["Records"])
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return out


def lake_state(s3, bucket: str) -> dict[str, list[dict]]:
    """Every stream lake object: key -> its decoded lines."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/stream/")
            for o in page.get("Contents", [])]
    return {k: [json.loads(line) for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
                .decode().splitlines()] for k in keys}


def dynamo_items(dynamodb, table: str) -> list[dict]:
    """Every item of the table, as DynamoDB returns it."""
    items = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items.extend(page["Items"])
    return items


def shard_ranges(kinesis, stream: str, after: dict | None = None) -> list[tuple[str, str, str]]:
    """(shard, first, last) of everything in the stream (after the given positions), per shard."""
    ranges = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        position = (after or {}).get(shard_id)
        kwargs = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": position} if position
                  else {"ShardIteratorType": "TRIM_HORIZON"})
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **kwargs)["ShardIterator"]
        seqs = []
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            seqs += [r["SequenceNumber"] for r in page["Records"]]
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        if seqs:
            ranges.append((shard_id, seqs[0], seqs[-1]))
    return ranges


def stream_tail(kinesis, stream: str) -> dict:
    """The last sequence number of each shard now: ranges after it are what a test added."""
    return {shard: last for shard, _, last in shard_ranges(kinesis, stream)}


def lease_table(resources):
    """The drain's lease table for the resources' stream."""
    from appdata.stream.leases import LeaseTable

    return LeaseTable(resources["dynamodb"].get_client(), resources["dynamodb"].lease_table_name,
                      resources["kinesis"].stream_name)


def consumer_sinks(resources, engine=None):
    """The sinks of the resources; `engine` (else the warehouse resource's) for every range."""
    from contextlib import nullcontext

    from appdata.stream.consumer import Sinks

    return Sinks(s3=resources["s3"].get_client(), bucket=resources["s3"].bucket,
                 dynamodb=resources["dynamodb"].get_client(), table=resources["dynamodb"].table_name,
                 warehouse=(lambda: nullcontext(engine)) if engine is not None else resources["warehouse"].connect)


def drain_all(resources, engine=None, owner: str = "test-drain") -> list:
    """Every shard drained up to now by a consumer that stops once caught up (no daemon)."""
    from appdata.stream.consumer import drain_until_caught_up

    return drain_until_caught_up(kinesis=resources["kinesis"].get_client(), stream=resources["kinesis"].stream_name,
                                 leases=lease_table(resources), sinks=consumer_sinks(resources, engine), owner=owner).results


def until_caught_up(run_config: dict) -> dict:
    """A consumer run's config (as the sensor requests it) that stops once nothing is waiting,
    instead of at its deadline minutes away: the run a test can execute in process."""
    import copy

    from appdata.defs.stream.drain import DRAIN_OP

    config = copy.deepcopy(run_config)
    config["ops"][DRAIN_OP]["config"]["stop_when_caught_up"] = True
    return config


def forgotten_users(resources):
    """The forgotten-users list of the resources' bucket."""
    from appdata.privacy.forgotten import ForgottenUsers

    return ForgottenUsers(resources["s3"].get_client(), resources["s3"].bucket)
