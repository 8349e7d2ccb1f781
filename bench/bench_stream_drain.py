"""Drain throughput vs a plain boto3 loop, and a 1,000 records/s stream drained at sensor cadence.

Run: /tmp/v/bin/python bench/bench_stream_drain.py [--records 10000] [--rate 1000] [--duration 60]

Part 1 drains the same range of a one-shard stream with `drain_range` (decode, validate,
lake + dead letters, DynamoDB, warehouse insert_new) and with a plain boto3 loop that does the
same reads and writes (GetRecords, gzip JSON lines to S3, BatchWriteItem, one bulk insert) on
the same emulator, alternating, best of rounds. Part 2 writes `rate` records/s for `duration`
seconds while a loop drains every 5 s (the sensor's interval) and reports the backlog.
The LAST line is the throughput ratio drain / plain (target >= 0.8).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from appdata.local.emulator import emulator_process  # noqa: E402


def events(n: int, tag: str) -> list[dict]:
    today = dt.date.today().isoformat()
    return [{
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}-{i}")), "user_id": 100_001 + i % 1000,
        "name": "Bench User", "location": "Ohio", "age": 20 + i % 50, "app": f"App {i % 5000}",
        "category": "GAME", "rating": 4.1, "reviews": 1000 + i, "size_mb": 14.0, "installs": 100000, "type": "Free",
        "price": 0.0, "content_rating": "Everyone", "genres": "Arcade", "last_updated": "2018-06-01",
        "current_ver": "2.1", "android_ver": "4.4 and up", "minutes_spent": 5 + i % 90, "download_date": today,
    } for i in range(n)]


def put_all(kinesis, stream: str, items: list[dict]) -> list[dict]:
    out = []
    for start in range(0, len(items), 500):
        chunk = items[start:start + 500]
        response = kinesis.put_records(StreamName=stream, Records=[
            {"Data": json.dumps(e, separators=(",", ":")).encode(), "PartitionKey": str(e["user_id"])} for e in chunk])
        out.extend(response["Records"])
    return out


def plain_loop(kinesis, stream, shard_id, first, last, s3, bucket, dynamodb, table, engine) -> int:
    """The baseline: the same reads and writes with nothing but boto3, json, gzip and one insert."""
    from appdata.warehouse.loader import bulk_insert

    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
                                          StartingSequenceNumber=first)["ShardIterator"]
    rows, done = [], False
    while not done:
        response = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        for record in response["Records"]:
            rows.append((record, json.loads(record["Data"])))
            if int(record["SequenceNumber"]) >= int(last):
                done = True
                break
        iterator = response["NextShardIterator"]
        if not response["Records"]:
            break
    groups: dict[tuple, list[str]] = {}
    for record, event in rows:
        hour = record["ApproximateArrivalTimestamp"].astimezone(dt.timezone.utc).strftime("%H")
        groups.setdefault((event["download_date"], hour), []).append(json.dumps(event))
    for (day, hour), lines in groups.items():
        s3.put_object(Bucket=bucket, Key=f"plain/download_date={day}/hour={hour}/{shard_id}-{first}-{last}.jsonl.gz",
                      Body=gzip.compress(("\n".join(lines) + "\n").encode()))
    items = []
    for _, e in rows:
        item = {"user_id": {"S": str(e["user_id"])}, "sk": {"S": f"DL#{e['download_date']}#{e['event_id']}"}}
        for k, v in e.items():
            if k != "user_id" and v is not None:
                item[k] = {"N": str(v)} if isinstance(v, (int, float)) else {"S": str(v)}
        items.append(item)
    for start in range(0, len(items), 25):
        pending = {table: [{"PutRequest": {"Item": it}} for it in items[start:start + 25]]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    frame = pd.DataFrame([e for _, e in rows])
    frame["download_date"] = pd.to_datetime(frame["download_date"]).dt.date
    frame["last_updated"] = pd.to_datetime(frame["last_updated"]).dt.date
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM downloads_stream")
        bulk_insert(conn, "downloads_stream", frame)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--duration", type=int, default=60)
    args = parser.parse_args()

    with emulator_process() as endpoint:
        home = tempfile.mkdtemp(prefix="bench-stream-")
        os.environ.update(APPDATA_HOME=home, APPDATA_AWS_ENDPOINT_URL=endpoint)
        from appdata.config import Settings
        from appdata.local.provision import provision
        from appdata.defs.resources import build_resources, WarehouseResource
        from appdata.stream.drain import drain_available, drain_range
        from appdata.warehouse.loader import create_schema

        settings = Settings.from_env()
        res = build_resources(settings)
        provision(res, shards=1)
        kinesis, s3, dynamodb = res["kinesis"].get_client(), res["s3"].get_client(), res["dynamodb"].get_client()
        stream, bucket, table = res["kinesis"].stream_name, res["s3"].bucket, res["dynamodb"].table_name
        engine = res["warehouse"].get_engine()
        plain_engine = WarehouseResource(url=f"duckdb:///{home}/plain.duckdb").get_engine()
        create_schema(plain_engine)

        # ---- part 1: throughput
        put = put_all(kinesis, stream, events(args.records, "tp"))
        shard_id, first, last = put[0]["ShardId"], put[0]["SequenceNumber"], put[-1]["SequenceNumber"]
        drain_times, plain_times = [], []
        for round_no in range(args.rounds):
            with engine.begin() as conn:  # each round inserts for real, like the first drain of a range
                conn.exec_driver_sql("DELETE FROM downloads_stream")
            t = time.perf_counter()
            result = drain_range(kinesis=kinesis, stream=stream, shard_id=shard_id, first_sequence=first,
                                 last_sequence=last, s3=s3, bucket=bucket, dynamodb=dynamodb, table=table, engine=engine)
            drain_times.append(time.perf_counter() - t)
            assert result.valid == args.records and result.warehouse_inserted == args.records, result.summary()
            t = time.perf_counter()
            n = plain_loop(kinesis, stream, shard_id, first, last, s3, bucket, dynamodb, table, plain_engine)
            plain_times.append(time.perf_counter() - t)
            assert n == args.records
            print(f"round {round_no + 1}: drain {drain_times[-1]:.2f}s, plain boto3 loop {plain_times[-1]:.2f}s")
        drain_rate = args.records / min(drain_times)
        plain_rate = args.records / min(plain_times)
        print(f"drain_range: {drain_rate:,.0f} records/s (S3 + DynamoDB + warehouse, validated)")
        print(f"plain boto3 loop: {plain_rate:,.0f} records/s (same reads and writes, no validation)")

        # ---- part 2: a one-shard stream at `rate` records/s, drained every 5 s
        positions = {shard_id: last}
        produced = {"n": 0}
        stop = threading.Event()

        def producer() -> None:
            start = time.monotonic()
            batch = events(args.rate * args.duration, "live")
            second = 0
            while second < args.duration:
                put_all(kinesis, stream, batch[second * args.rate:(second + 1) * args.rate])
                produced["n"] += args.rate
                second += 1
                pause = start + second - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            produced["seconds"] = time.monotonic() - start
            stop.set()

        drained = 0
        lags: list[float] = []
        thread = threading.Thread(target=producer)
        thread.start()
        while True:
            tick = time.monotonic()
            results, positions = drain_available(kinesis=kinesis, stream=stream, s3=s3, bucket=bucket,
                                                 dynamodb=dynamodb, table=table, engine=engine, positions=positions,
                                                 max_records=5_000)
            now = dt.datetime.now(dt.timezone.utc)
            drained += sum(r.records for r in results)
            lags.extend((now - r.newest_arrival).total_seconds() for r in results if r.newest_arrival)
            if stop.is_set() and drained >= produced["n"]:
                break
            time.sleep(max(0.0, 5.0 - (time.monotonic() - tick)))
        thread.join()
        lags.sort()
        p95 = lags[int(0.95 * (len(lags) - 1))] if lags else 0.0
        print(f"live: produced {produced['n']:,} records in {produced['seconds']:.1f}s "
              f"({produced['n'] / produced['seconds']:,.0f}/s offered by the producer), drained {drained:,}; "
              f"lag from arrival to drained per range: p95 {p95:.1f}s, max {lags[-1]:.1f}s over {len(lags)} ranges")
        verdict = "kept up" if lags[-1] <= 15.0 else "FELL BEHIND"
        print(f"live verdict: {verdict} (a range is drained within {lags[-1]:.1f}s of its newest record's arrival)")
        print(f"ratio drain/plain throughput: {drain_rate / plain_rate:.2f}x (target >= 0.8)")
        engine.dispose()
        plain_engine.dispose()


if __name__ == "__main__":
    main()
