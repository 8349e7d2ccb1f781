"""A shard's full write rate drained live by the shard consumers, and drain_range vs plain boto3.

Run: .venv/bin/python bench/bench_stream_drain.py [--rate 1000] [--duration 120] [--shards 1]
     [--throughput-records 10000]   (0 skips part 1)

Part 1 drains one 10,000-record range with `drain_range` (decode, validate, lake + dead letters,
DynamoDB, warehouse insert_new) and with a plain boto3 loop doing the same reads and writes,
best of two rounds each.
Part 2 is the live drain as the Dagster runs do it: a producer process puts `rate` records/s for
`duration` s (spread over `shards` shards), while one consumer process per shard
(`ShardConsumer`, lease and checkpoint in DynamoDB) drains into S3, DynamoDB and the warehouse.
Per range it records how long after its newest record's arrival on Kinesis the range was in
every sink; at the end it counts every sink (each event exactly once).
The LAST line: drained/offered records (1.00 = kept up) and the p95 lag against the 10 s target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from _common import BenchEnvironment, bench_events, print_emulator_ceilings  # noqa: E402

TARGET_P95_SECONDS = 10.0


def put_all(kinesis, stream: str, items: list[dict]) -> int:
    """PutRecords in 500s, failed entries put again; returns records stored."""
    stored = 0
    for start in range(0, len(items), 500):
        entries = [{"Data": json.dumps(e, separators=(",", ":")).encode(), "PartitionKey": str(e["event_id"])}
                   for e in items[start:start + 500]]
        while entries:
            response = kinesis.put_records(StreamName=stream, Records=entries)
            failed = [entry for entry, result in zip(entries, response["Records"]) if "ErrorCode" in result]
            stored += len(entries) - len(failed)
            entries = failed
    return stored


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


def _resources():
    from appdata.config import Settings
    from appdata.defs.resources import build_resources

    return build_resources(Settings.from_env())


def produce(rate: int, duration: int, tag: str, report) -> None:
    """Put `rate` records a second for `duration` seconds, in PutRecords calls of up to 500 (as the
    API puts a POST's batch)."""
    resources = _resources()
    kinesis, stream = resources["kinesis"].get_client(), resources["kinesis"].stream_name
    batch = bench_events(rate * duration, tag)
    slice_size = min(500, rate)
    cpu_at_start, start = time.process_time(), time.monotonic()
    stored = 0
    for n, offset in enumerate(range(0, len(batch), slice_size)):
        stored += put_all(kinesis, stream, batch[offset:offset + slice_size])
        pause = start + (n + 1) * slice_size / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    report.put(("produced", stored, time.monotonic() - start, time.process_time() - cpu_at_start))


def consume(shard_id: str, until: float, report) -> None:
    """One shard consumer, as a Dagster drain run holds it, reporting each range's lag."""
    from appdata.stream.consumer import ShardConsumer, Sinks, stream_created
    from appdata.stream.drain import list_shards, parents_of
    from appdata.stream.leases import LeaseTable

    resources = _resources()
    kinesis, dynamodb = resources["kinesis"].get_client(), resources["dynamodb"].get_client()
    stream = resources["kinesis"].stream_name
    shard = next(s for s in list_shards(kinesis, stream) if s["ShardId"] == shard_id)

    def on_range(result) -> None:
        lag = time.time() - result.newest_arrival.timestamp()
        report.put(("range", shard_id, result.records, lag, time.process_time()))

    report.put(("ready", shard_id, time.process_time()))
    ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard_id, parents=parents_of(shard),
                  leases=LeaseTable(dynamodb, resources["dynamodb"].lease_table_name, stream),
                  owner=f"bench-{shard_id}", created=stream_created(kinesis, stream), on_range=on_range,
                  sinks=Sinks(s3=resources["s3"].get_client(), bucket=resources["s3"].bucket, dynamodb=dynamodb,
                              table=resources["dynamodb"].table_name, warehouse=resources["warehouse"].connect),
                  ).run(until=until)


def emulator_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each emulator process has used so far, by the services it serves."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"--serve" in args:
            services = args[args.index(b"--serve") + 1].decode()
            used[services] = (int(stat[11]) + int(stat[12])) / tick
    return used


def count_sinks(resources, engine) -> dict[str, tuple[int, int]]:
    """(rows, distinct event ids) in each sink."""
    from appdata import aws

    with engine.connect() as conn:
        warehouse = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM downloads_stream").one()
    dynamodb = resources["dynamodb"]
    sks = [item["sk"]["S"] for item in aws.scan_items(dynamodb.get_client(), dynamodb.table_name,
                                                      ProjectionExpression="sk")]
    s3, bucket = resources["s3"].get_client(), resources["s3"].bucket
    lake_ids = []
    for key in aws.list_keys(s3, bucket, "lake/stream/"):
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode()
        lake_ids.extend(json.loads(line)["event_id"] for line in body.splitlines())
    return {"warehouse": (warehouse[0], warehouse[1]), "dynamodb": (len(sks), len(set(sks))),
            "lake": (len(lake_ids), len(set(lake_ids)))}


def throughput(records: int) -> None:
    env = BenchEnvironment("drain-throughput")
    try:
        resources = env.provision_all()
        _throughput(resources, env, records)
    finally:
        env.close()


def _throughput(resources, env: BenchEnvironment, records: int) -> None:
    from appdata.defs.resources import WarehouseResource
    from appdata.stream.drain import drain_range
    from appdata.warehouse.loader import create_schema

    kinesis, s3, dynamodb = resources["kinesis"].get_client(), resources["s3"].get_client(), resources["dynamodb"].get_client()
    stream, bucket, table = resources["kinesis"].stream_name, resources["s3"].bucket, resources["dynamodb"].table_name
    plain_engine = WarehouseResource(url=f"duckdb:///{env.home}/plain.duckdb").get_engine()
    create_schema(plain_engine)
    with resources["warehouse"].connect() as engine:
        put_all(kinesis, stream, bench_events(records, "throughput"))
        shard_id = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id,
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        got = kinesis.get_records(ShardIterator=iterator, Limit=records)["Records"]
        first, last = got[0]["SequenceNumber"], got[-1]["SequenceNumber"]
        drain_times, plain_times = [], []
        for _ in range(2):
            with engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM downloads_stream")
            t = time.perf_counter()
            result = drain_range(kinesis=kinesis, stream=stream, shard_id=shard_id, first_sequence=first,
                                 last_sequence=last, s3=s3, bucket=bucket, dynamodb=dynamodb, table=table, engine=engine)
            drain_times.append(time.perf_counter() - t)
            assert result.warehouse_inserted == len(got), result.summary()
            t = time.perf_counter()
            plain_loop(kinesis, stream, shard_id, first, last, s3, bucket, dynamodb, table, plain_engine)
            plain_times.append(time.perf_counter() - t)
    plain_engine.dispose()
    drain_rate, plain_rate = len(got) / min(drain_times), len(got) / min(plain_times)
    print(f"part 1: drain_range {drain_rate:,.0f} records/s, plain boto3 loop {plain_rate:,.0f} records/s "
          f"({drain_rate / plain_rate:.2f}x) over a {len(got):,}-record range")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1_000, help="records/s offered, all shards together")
    parser.add_argument("--duration", type=int, default=120)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--throughput-records", type=int, default=10_000)
    args = parser.parse_args()

    if args.throughput_records:
        throughput(args.throughput_records)
    env = BenchEnvironment("drain-live")
    try:
        resources = env.provision_all(shards=args.shards)
        print_emulator_ceilings(env.endpoints)
        kinesis, stream = resources["kinesis"].get_client(), resources["kinesis"].stream_name
        shard_ids = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
        ctx = mp.get_context("spawn")
        report = ctx.Queue()
        until = time.time() + args.duration + 600
        consumers = [ctx.Process(target=consume, args=(shard_id, until, report)) for shard_id in shard_ids]
        for process in consumers:
            process.start()
        time.sleep(3)  # the consumers' start (imports) is not part of the live figure
        emulator_before = emulator_cpu_seconds()
        producer = ctx.Process(target=produce, args=(args.rate, args.duration, "live", report))
        producer.start()
        produced, produce_seconds, drained, lags = None, None, 0, []
        cpu: dict[str, float] = {}
        cpu_at_start: dict[str, float] = {}
        live_started = time.monotonic()
        while produced is None or drained < produced:
            message = report.get(timeout=args.duration + 600)
            if message[0] == "produced":
                produced, produce_seconds, producer_cpu = message[1], message[2], message[3]
            elif message[0] == "ready":
                cpu_at_start[message[1]] = message[2]
            else:
                drained += message[2]
                lags.append(message[3])
                cpu[message[1]] = message[4] - cpu_at_start[message[1]]
        live_seconds = time.monotonic() - live_started
        emulator_used = {k: v - emulator_before.get(k, 0.0) for k, v in emulator_cpu_seconds().items()}
        for process in consumers:
            process.terminate()
        producer.join()
        with resources["warehouse"].connect() as engine:
            sinks = count_sinks(resources, engine)
        lags.sort()
        p95 = lags[int(0.95 * (len(lags) - 1))]
        print(f"live: {args.shards} shard(s), producer offered {produced:,} records in {produce_seconds:.1f}s "
              f"({produced / produce_seconds:,.0f}/s); consumers drained {drained:,} in {len(lags):,} ranges")
        print(f"lag from a range's newest arrival to in every sink: p50 {lags[len(lags) // 2]:.2f}s, "
              f"p95 {p95:.2f}s, max {lags[-1]:.2f}s")
        cores = sum(cpu.values()) / live_seconds / len(shard_ids)
        print(f"consumer CPU: {sum(cpu.values()):.1f}s over {live_seconds:.0f}s, {cores:.2f} of a core per shard "
              f"({sum(cpu.values()) / drained * 1000:.2f} CPU-s per 1,000 records; what an ECS task per shard needs)")
        shares = {f"emulator {k}": v for k, v in emulator_used.items()}
        shares["producer"] = producer_cpu
        shares["consumers"] = sum(cpu.values())
        print(f"CPU over the live part ({live_seconds:.0f}s, {os.cpu_count()} cores): " + ", ".join(
            f"{name} {seconds / live_seconds:.0%}" for name, seconds in shares.items()))
        exact = all(pair == (produced, produced) for pair in sinks.values())
        print("sinks (rows, distinct events): " + ", ".join(f"{k} {v[0]:,}/{v[1]:,}" for k, v in sinks.items())
              + (" = every record exactly once" if exact else " NOT exactly once"))
        print(f"drained/offered {drained / produced:.2f}x, p95 lag {p95:.2f}s "
              f"({'meets' if p95 <= TARGET_P95_SECONDS and exact else 'MISSES'} the {TARGET_P95_SECONDS:.0f}s target)")
    finally:
        env.close()


if __name__ == "__main__":
    main()
