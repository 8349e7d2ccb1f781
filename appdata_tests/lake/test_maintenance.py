"""Upkeep of the lake's Iceberg table against the emulator: a day of many small stream commits
compacted into few files with the same rows, a reader holding the old snapshot still answered,
and after expiry and orphan removal nothing is left that no snapshot references."""

from __future__ import annotations

import datetime as dt

import pytest

from appdata.contract import schema
from appdata.lake import maintenance, tables
from appdata_tests.support.events import make_event

pytestmark = pytest.mark.emulator

DAY = dt.date(2020, 3, 1)


def small_commits(table, stream: str, count: int, per_commit: int) -> list[str]:
    ids = []
    for commit in range(count):
        records = [make_event(commit * per_commit + n, day=DAY, with_id=True) for n in range(per_commit)]
        valid = schema.validate_records(schema.records_to_frame(records), first_row=0).valid
        sequences = [str(10**40 + commit * per_commit + n) for n in range(per_commit)]
        rows = tables.with_provenance(tables.events_from_frame(valid), source=tables.STREAM,
                                      ingested_at=dt.datetime.now(dt.timezone.utc), shard_id="shard-0",
                                      sequence_numbers=sequences, arrived_at=[None] * per_commit)
        tables.append_stream(table, stream, [tables.StreamBatch("shard-0", sequences[-1], rows)])
        ids += rows.column("event_id").to_pylist()
    return ids


def many_small_files(table, s3, bucket: str, count: int) -> list[str]:
    """`count` one-row Parquet files of DAY's stream partition, added in one commit (what a day of
    small stream commits leaves, without waiting for hundreds of commits)."""
    import io

    import pyarrow.parquet as pq

    records = [make_event(1000 + n, day=DAY, with_id=True) for n in range(count)]
    valid = schema.validate_records(schema.records_to_frame(records), first_row=0).valid
    rows = tables.with_provenance(tables.events_from_frame(valid), source=tables.STREAM,
                                  ingested_at=dt.datetime.now(dt.timezone.utc), shard_id="shard-0",
                                  sequence_numbers=[str(n) for n in range(count)], arrived_at=[None] * count)
    prefix = table.location().split("/", 3)[3] + f"/data/download_date={DAY}/source=stream"
    paths = []
    for n in range(count):
        body = io.BytesIO()
        pq.write_table(rows.slice(n, 1), body)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/small-{n:04d}.parquet", Body=body.getvalue())
        paths.append(f"s3://{bucket}/{prefix}/small-{n:04d}.parquet")
    table.add_files(paths)
    return rows.column("event_id").to_pylist()


def test_compaction_keeps_the_rows_in_few_files_and_a_reader_of_the_old_snapshot_still_answers(provisioned):
    table = provisioned["lake_table"].open()
    ids = many_small_files(table, provisioned["s3"].get_client(), provisioned["s3"].bucket, 300)
    ids += small_commits(table, "st", count=2, per_commit=5)
    (before,) = maintenance.files_by_partition(table)
    assert before.files == 302

    reader = table.scan()  # a query planned before compaction, read after it
    done = maintenance.compact_partition(table, DAY, tables.STREAM)
    assert (done.files_before, done.files_after, done.rows) == (302, 1, 310)
    assert sorted(reader.to_arrow().column("event_id").to_pylist()) == sorted(ids)
    assert sorted(tables.scan(table, columns=("event_id",)).column("event_id").to_pylist()) == sorted(ids)
    assert len(set(ids)) == 310
    assert tables.stream_marks(table, "st") == {"shard-0": str(10**40 + 9)}  # compaction keeps the marks


def test_expiry_and_orphan_removal_leave_only_what_the_current_snapshot_needs(provisioned):
    table = provisioned["lake_table"].open()
    s3 = provisioned["s3"].get_client()
    ids = small_commits(table, "st", count=6, per_commit=3)
    maintenance.compact_partition(table, DAY, tables.STREAM)
    stray = table.location().split("/", 3)[3] + "/data/stray-from-a-dead-writer.parquet"
    s3.put_object(Bucket=provisioned["s3"].bucket, Key=stray, Body=b"x")

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    assert maintenance.expire_snapshots(table, now=later) == len(table.snapshots()) + 7 - 1
    sweep = maintenance.remove_orphan_files(table, s3, now=later)
    assert stray in sweep.removed
    assert sum(key.endswith(".parquet") and "/data/" in key for key in sweep.removed) == 7  # 6 small + stray
    assert sorted(tables.scan(table, columns=("event_id",)).column("event_id").to_pylist()) == sorted(ids)
    assert maintenance.remove_orphan_files(table, s3, now=later).removed == []

    recent = maintenance.remove_orphan_files(table, s3, now=dt.datetime.now(dt.timezone.utc))
    assert recent.removed == []  # inside the grace period nothing is touched


def test_the_maintenance_asset_brings_the_table_up_to_the_drain_and_reconciles_it(provisioned):
    import dagster as dg

    from appdata.defs.lake.assets import lake_downloads, table_matches_warehouse
    from appdata_tests.support.stream import drain_all, put

    kinesis = provisioned["kinesis"].get_client()
    put(kinesis, provisioned["kinesis"].stream_name, [make_event(n, day=DAY, with_id=True) for n in range(25)])
    with provisioned["warehouse"].connect() as engine:
        drain_all(provisioned, engine)
    result = dg.materialize([lake_downloads, table_matches_warehouse], resources=provisioned)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description
    metadata = result.asset_materializations_for_node("lake_downloads")[0].metadata
    assert metadata["files_per_partition"].value == {f"{DAY} stream": 1}
    assert metadata["snapshots_kept"].value >= 1
