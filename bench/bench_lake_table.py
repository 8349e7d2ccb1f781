"""The lake's Iceberg table: its lag behind the stream, and the README one-liner's time for a week.

Run: .venv/bin/python bench/bench_lake_table.py [--rate 1000] [--duration 60]
     [--days 7] [--rows-per-day 100000] [--commit-rows 10000] [--reads 3]   (--duration 0 or
     --days 0 skips that part)

Part 1, lag: a producer process puts `rate` records/s on one shard for `duration` s while a
`ShardConsumer` drains it into the lake, DynamoDB and the warehouse, with a `StreamTableWriter`
(commit_seconds 30) committing the drained rows to the table as the drain run does (after a
range, and in the consumer's pauses). For each commit: the age of its newest row (commit done
minus that record's Kinesis arrival) and of its oldest (how long a record waited for the table);
baseline, same run: each range's latency from its newest record's arrival to being in every sink.
Then the table is counted: every record once.

Part 2, a week into pandas: `days` x `rows_per_day` stream rows appended as the stream does
(`append_stream`, one shard's mark moving, `commit_rows` rows a commit, so one small file each),
then read with the README's one-liner (`open_downloads().scan(row_filter=...).to_pandas()`)
against the same rows from one local Parquet file (`pyarrow.parquet.read_table(filters=...)`,
`to_pandas()`), median of `reads`, before and after compacting each day.

The LAST line: the ratios (table / baseline) of part 1's p95 and of part 2's read after compaction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BenchEnvironment  # noqa: E402
from bench_stream_drain import produce  # noqa: E402

COMMIT_SECONDS = 30.0


def _resources():
    from appdata.config import Settings
    from appdata.defs.resources import build_resources

    return build_resources(Settings.from_env())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def _spread(values: list[float]) -> str:
    return f"p50 {_pct(values, 0.5):.2f}s, p95 {_pct(values, 0.95):.2f}s, max {max(values):.2f}s"


# --------------------------------------------------------------------------- part 1: lag


def consume(until: float, report) -> None:
    """One shard consumer with the table writer, as `stream_drain` runs them; reports each range's
    latency and each commit's row ages."""
    import pyarrow.compute as pc

    from appdata.stream.consumer import ShardConsumer, Sinks, stream_created
    from appdata.stream.drain import list_shards
    from appdata.stream.leases import LeaseTable
    from appdata.stream.table_writer import StreamTableWriter

    resources = _resources()
    kinesis, dynamodb = resources["kinesis"].get_client(), resources["dynamodb"].get_client()
    stream = resources["kinesis"].stream_name
    (shard,) = list_shards(kinesis, stream)
    shard_id = shard["ShardId"]
    leases = LeaseTable(dynamodb, resources["dynamodb"].lease_table_name, stream)
    writer = StreamTableWriter(open_table=resources["lake_table"].open, kinesis=kinesis, stream=stream,
                               shard_id=shard_id, delivered=lambda: leases.get(shard_id).checkpoint,
                               commit_seconds=COMMIT_SECONDS)
    buffered: list[tuple[float, float]] = []  # (oldest, newest) arrival of each range waiting for a commit

    def commit_if_due() -> None:
        if not writer.due():
            return
        committed = writer.commit()
        done = time.time()
        if committed is not None and buffered:
            report.put(("commit", committed.rows, committed.seconds, done - min(o for o, _ in buffered),
                        done - max(n for _, n in buffered)))
        buffered.clear()

    def on_range(result) -> None:
        report.put(("range", result.records, time.time() - result.newest_arrival.timestamp()))
        writer.add(result)
        if result.table_rows is not None and result.table_rows.num_rows:
            oldest = pc.min(result.table_rows.column("arrived_at")).as_py()
            buffered.append((oldest.timestamp(), result.newest_arrival.timestamp()))
        commit_if_due()

    def pause(seconds: float) -> None:
        commit_if_due()
        time.sleep(seconds)

    report.put(("ready",))
    ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard_id, parents=[], leases=leases,
                  owner="bench-lake", created=stream_created(kinesis, stream), on_range=on_range, sleep=pause,
                  sinks=Sinks(s3=resources["s3"].get_client(), bucket=resources["s3"].bucket, dynamodb=dynamodb,
                              table=resources["dynamodb"].table_name, warehouse=resources["warehouse"].connect),
                  ).run(until=until)


def lag(rate: int, duration: int) -> float:
    """Part 1; returns the ratio of the p95s (commit's newest row age / range latency)."""
    from appdata.lake import tables

    resources = _resources()
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    consumer = ctx.Process(target=consume, args=(time.time() + duration + 600, report))
    consumer.start()
    assert report.get(timeout=120) == ("ready",)
    time.sleep(3)  # the consumer's first (empty) commit opens the table
    producer = ctx.Process(target=produce, args=(rate, duration, "lake-lag", report))
    producer.start()
    produced, drained, committed = None, 0, 0
    ranges, newest, oldest, commit_seconds = [], [], [], []
    while produced is None or drained < produced or committed < produced:
        message = report.get(timeout=duration + 600)
        if message[0] == "produced":
            produced, produce_seconds = message[1], message[2]
        elif message[0] == "range":
            drained += message[1]
            ranges.append(message[2])
        elif message[0] == "commit":
            committed += message[1]
            commit_seconds.append(message[2])
            oldest.append(message[3])
            newest.append(message[4])
    consumer.terminate()
    producer.join()
    table = resources["lake_table"].open()
    ids = tables.scan(table, source=tables.STREAM, columns=("event_id",)).column("event_id").to_pylist()
    print(f"part 1: offered {produced:,} records in {produce_seconds:.1f}s ({produced / produce_seconds:,.0f}/s) on "
          f"one shard; drained in {len(ranges)} ranges, committed to the table in {len(newest)} commits "
          f"(commit itself: {_spread(commit_seconds)})")
    print(f"  table rows {len(ids):,}, distinct events {len(set(ids)):,}"
          + (" = every record exactly once" if len(ids) == len(set(ids)) == produced else " NOT exactly once"))
    print(f"  baseline, range arrival -> every sink:      {_spread(ranges)}")
    print(f"  table commit, age of its newest row:        {_spread(newest)}")
    print(f"  table commit, age of its oldest row:        {_spread(oldest)}  (the longest a record waited)")
    return _pct(newest, 0.95) / _pct(ranges, 0.95)


# --------------------------------------------------------------------------- part 2: a week into pandas


def week_rows(days: list[dt.date], rows_per_day: int):
    """`rows_per_day` stream rows per day, as the drain makes them (contract columns + provenance)."""
    import pyarrow as pa

    from appdata.lake import tables

    n = rows_per_day
    base = {
        "user_id": pa.array([100_001 + i % 1000 for i in range(n)], pa.int64()),
        "name": pa.array(["Bench User"] * n), "location": pa.array(["Ohio"] * n),
        "age": pa.array([20 + i % 50 for i in range(n)], pa.int64()),
        "app": pa.array([f"App {i % 5000}" for i in range(n)]), "category": pa.array(["GAME"] * n),
        "rating": pa.array([4.1] * n), "reviews": pa.array([1000 + i for i in range(n)], pa.int64()),
        "size_mb": pa.array([14.0] * n), "installs": pa.array([100_000] * n, pa.int64()),
        "type": pa.array(["Free"] * n), "price": pa.array([0.0] * n), "content_rating": pa.array(["Everyone"] * n),
        "genres": pa.array(["Arcade"] * n), "last_updated": pa.array([dt.date(2018, 6, 1)] * n, pa.date32()),
        "current_ver": pa.array(["2.1"] * n), "android_ver": pa.array(["4.4 and up"] * n),
        "minutes_spent": pa.array([5 + i % 90 for i in range(n)], pa.int64()),
    }
    for day_number, day in enumerate(days):
        events = {**base, "event_id": pa.array([str(uuid.uuid4()) for _ in range(n)]),
                  "download_date": pa.array([day] * n, pa.date32())}
        arrived = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        yield day_number, tables.with_provenance(
            pa.table({name: events[name] for name in tables.EVENT_ARROW_SCHEMA.names}).cast(tables.EVENT_ARROW_SCHEMA),
            source=tables.STREAM, ingested_at=arrived, shard_id="shardId-bench-week",
            sequence_numbers=[str(10**20 + day_number * n + i) for i in range(n)],
            arrived_at=[arrived + dt.timedelta(seconds=i * 86_400 / n) for i in range(n)])


def _median_seconds(read, reads: int) -> tuple[float, int]:
    seconds, rows = [], 0
    for _ in range(reads):
        started = time.perf_counter()
        rows = len(read())
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), rows


def query_week(days: int, rows_per_day: int, commit_rows: int, reads: int) -> float:
    """Part 2; returns the ratio (one-liner / one Parquet file) after compaction."""
    import pyarrow.parquet as pq

    from appdata.lake import maintenance, open_downloads, tables

    resources = _resources()
    table = resources["lake_table"].open()
    week = [dt.date(2020, 1, 1) + dt.timedelta(days=d) for d in range(days)]
    start, end = week[0], week[-1] + dt.timedelta(days=1)
    local = Path(tempfile.mkdtemp(prefix="bench-lake-week-")) / "week.parquet"
    writer = None
    started, commits = time.perf_counter(), 0
    for _, rows in week_rows(week, rows_per_day):
        writer = writer or pq.ParquetWriter(local, rows.schema)
        writer.write_table(rows)
        for offset in range(0, rows.num_rows, commit_rows):
            part = rows.slice(offset, commit_rows)
            last = part.column("sequence_number")[-1].as_py()
            tables.append_stream(table, "bench-week", [tables.StreamBatch("shardId-bench-week", last, part)])
            commits += 1
    writer.close()
    print(f"part 2: {days} days x {rows_per_day:,} rows appended in {commits} commits of {commit_rows:,} "
          f"rows in {time.perf_counter() - started:.1f}s; the same rows in one local Parquet file of "
          f"{local.stat().st_size / 1e6:.1f} MB")

    row_filter = f"download_date >= '{start}' and download_date < '{end}'"

    def one_liner():
        return open_downloads().scan(row_filter=row_filter).to_pandas()

    def baseline():
        return pq.read_table(local, filters=[("download_date", ">=", start), ("download_date", "<", end)]).to_pandas()

    def measure(label: str) -> float:
        files = [p for p in maintenance.files_by_partition(table) if start <= p.day < end]
        table_seconds, table_rows = _median_seconds(one_liner, reads)
        file_seconds, file_rows = _median_seconds(baseline, reads)
        assert table_rows == file_rows == days * rows_per_day, (table_rows, file_rows)
        print(f"  {label}: {sum(p.files for p in files)} data files ({max(p.files for p in files)} per day); "
              f"one-liner {table_seconds:.2f}s, one Parquet file {file_seconds:.2f}s, median of {reads}, "
              f"{table_rows:,} rows: {table_seconds / file_seconds:.2f}x")
        return table_seconds / file_seconds

    measure("before compaction")
    started = time.perf_counter()
    for day in week:
        maintenance.compact_partition(table, day, tables.STREAM)
    print(f"  compaction of {days} days: {time.perf_counter() - started:.1f}s")
    ratio = measure("after compaction")
    local.unlink()
    local.parent.rmdir()
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1_000, help="records/s offered to the one shard")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--commit-rows", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=3)
    args = parser.parse_args()

    env = BenchEnvironment("lake-table")
    try:
        env.provision_all(shards=1)
        lag_ratio = lag(args.rate, args.duration) if args.duration else None
        read_ratio = query_week(args.days, args.rows_per_day, args.commit_rows, args.reads) if args.days else None
    finally:
        env.close()
    print("ratios: " + ", ".join(part for part in (
        f"lag p95 (commit's newest row / range latency) {lag_ratio:.2f}x" if lag_ratio is not None else "",
        f"week into pandas after compaction (one-liner / one Parquet file) {read_ratio:.2f}x"
        if read_ratio is not None else "") if part))


if __name__ == "__main__":
    main()
