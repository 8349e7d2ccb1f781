"""The local emulator's ceilings, per service, and what one process per service buys under mixed load.

Ceilings (`_common.emulator_ceilings`, against one process per service, each loaded alone, two
boto3 clients back to back): Kinesis PutRecords (500 events of ~400 bytes a call) and GetRecords
in records/s, DynamoDB BatchWriteItem (25 download items a call) in items/s, S3 PutObject (50 KB)
in objects/s. Then the mixed load that the live drain meets: a producer process putting to Kinesis
flat out while a consumer process reads the shard (pages of 500) and writes each page to DynamoDB
(BatchWriteItem, calls in flight as the drain makes them) and S3 (one object, at the same time),
for `--seconds`; rounds on
a fresh emulator each, one process for all services vs one per service, in ABBA order.

    .venv/bin/python bench/bench_emulator.py [--seconds 10] [--ceiling-seconds 4]

Last line: records/s drained (in DynamoDB and S3) under mixed load, per-service over single process.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import (  # noqa: E402
    _aws_client, create_stores, download_items, kinesis_entries, print_emulator_ceilings, shard_iterator)
from appdata import aws  # noqa: E402
from appdata.local.emulator import emulator_process  # noqa: E402

PAGE = 500


def produce(endpoints, name: str, start_at: float, seconds: float, results) -> None:
    """PutRecords of 500 events, back to back, from `start_at` for `seconds`."""
    kinesis = _aws_client(endpoints, "kinesis")
    entries = kinesis_entries(aws.PUT_RECORDS_LIMIT, name)
    time.sleep(max(0.0, start_at - time.time()))
    put, deadline = 0, start_at + seconds
    while time.time() < deadline:
        put += len(kinesis.put_records(StreamName=name, Records=entries)["Records"])
    results.put(("produced", put / (time.time() - start_at)))


def consume(endpoints, name: str, start_at: float, seconds: float, results) -> None:
    """GetRecords pages of 500 from the shard's start; each page's items to DynamoDB (BatchWriteItem,
    `aws.batch_write_items`'s calls in flight) while its lines go to S3 as one gzip object; counts
    the records of the pages finished in time."""
    import json

    kinesis, s3, dynamodb = (_aws_client(endpoints, service) for service in ("kinesis", "s3", "dynamodb"))
    time.sleep(max(0.0, start_at - time.time()))
    iterator = shard_iterator(kinesis, name)
    drained, deadline, finished = 0, start_at + seconds, start_at
    while time.time() < deadline:
        page = kinesis.get_records(ShardIterator=iterator, Limit=PAGE)
        iterator = page["NextShardIterator"]
        records = page["Records"]
        if not records:
            continue
        lake = threading.Thread(target=s3.put_object, kwargs={
            "Bucket": name, "Key": f"lake/{records[0]['SequenceNumber']}.jsonl.gz",
            "Body": gzip.compress(b"\n".join(record["Data"] for record in records))})
        lake.start()
        aws.batch_write_items(dynamodb, name, download_items([json.loads(record["Data"]) for record in records]))
        lake.join()
        if time.time() <= deadline:
            drained += len(records)
            finished = time.time()
    results.put(("drained", drained / max(1e-9, finished - start_at)))


def mixed_round(single_process: bool, seconds: float) -> dict[str, float]:
    """One round of the mixed load on a fresh emulator of the given shape."""
    context = multiprocessing.get_context("spawn")
    with emulator_process(single_process=single_process) as endpoints:
        name = f"mixed-{uuid.uuid4().hex[:8]}"
        create_stores(endpoints, name)
        results = context.Queue()
        start_at = time.time() + 3.0  # the workers' imports first, off the clock
        workers = [context.Process(target=work, args=(endpoints, name, start_at, seconds, results))
                   for work in (produce, consume)]
        for worker in workers:
            worker.start()
        rates = dict(results.get(timeout=seconds + 120) for _ in workers)
        for worker in workers:
            worker.join()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each mixed-load round")
    parser.add_argument("--ceiling-seconds", type=float, default=4.0, help="length of each ceiling measurement")
    args = parser.parse_args()

    with emulator_process() as endpoints:
        print("ceilings, one process per service, each service loaded alone:")
        print_emulator_ceilings(endpoints, args.ceiling_seconds)

    shapes = {True: "one process", False: "per service"}
    drained: dict[bool, list[float]] = {True: [], False: []}
    for single_process in (True, False, False, True):  # ABBA: machine drift hits both shapes alike
        rates = mixed_round(single_process, args.seconds)
        drained[single_process].append(rates["drained"])
        print(f"mixed load, {shapes[single_process]:<11}: producer {rates['produced']:>6,.0f} records/s put, "
              f"consumer {rates['drained']:>6,.0f} records/s drained to DynamoDB + S3")
    single, per_service = statistics.mean(drained[True]), statistics.mean(drained[False])
    print(f"mixed load drained: per service {per_service:,.0f} records/s vs one process {single:,.0f} records/s: "
          f"ratio {per_service / single:.2f}x")


if __name__ == "__main__":
    main()
