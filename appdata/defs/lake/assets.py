"""The lake's Iceberg table as assets (group `lake`): the batch's days into it, and its upkeep.

`lake_downloads_stream` is written by the stream drain (`appdata.defs.stream.drain`);
`lake_downloads_batch` here replaces the batch rows of its window of days in one commit;
`lake_downloads` is the table's maintenance (compaction of small files, snapshot expiry,
orphan removal), run hourly, recording each day's file count so the UI shows it stays bounded.
"""

import datetime as dt
import time

import dagster as dg
import pyarrow as pa

from appdata.defs.batch.assets import read_curated
from appdata.defs.partitions import daily_partitions, partition_days
from appdata.defs.reliability import check_result
from appdata.defs.resources import (
    TRANSIENT_IO_RETRY, DynamoDBResource, KinesisResource, LakeS3Resource, LakeTableResource, WarehouseResource,
)
from appdata.defs.stream.drain import TABLE_ASSET as STREAM_TABLE_ASSET
from appdata.lake import maintenance, tables
from appdata.privacy import forgotten
from appdata.reliability.lake_table import reconcile_lake_table
from appdata.stream.leases import LeaseTable
from appdata.stream.table_writer import sync_stream_table

GROUP = "lake"
BATCH_TABLE_ASSET = dg.AssetKey("lake_downloads_batch")


@dg.asset(
    key=BATCH_TABLE_ASSET,
    group_name=GROUP,
    retry_policy=TRANSIENT_IO_RETRY,
    kinds={"iceberg", "s3"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # After the warehouse load, so the table never holds a day the warehouse has not got yet (the
    # reconciliation check would call it extra while the load waits for the warehouse pool).
    deps=["curated_batch", "downloads_batch"],
    check_specs=[dg.AssetCheckSpec("rows_match_curated", asset=BATCH_TABLE_ASSET, blocking=True,
                                   description="The table's batch rows of each day are exactly the curated rows.")],
    description="The batch rows (source = 'batch') of the lake's Iceberg table <namespace>.downloads: the run's "
    "window of curated days replaces those days' batch partitions in one commit, so a re-run leaves exactly "
    "that content.",
)
def lake_downloads_batch(context: dg.AssetExecutionContext, s3: LakeS3Resource,
                         lake_table: LakeTableResource) -> dg.MaterializeResult:
    days = partition_days(context)
    curated, per_day, _ = read_curated(s3.get_client(), s3.bucket, days, context)
    events = pa.concat_tables([t.cast(tables.EVENT_ARROW_SCHEMA) for t in curated]) if curated \
        else tables.EVENT_ARROW_SCHEMA.empty_table()
    rows = tables.with_provenance(events, source=tables.BATCH, ingested_at=dt.datetime.now(dt.timezone.utc))
    table = lake_table.open()
    tables.replace_batch_days(table, days, rows)
    held = maintenance.partition_counts(table)
    mismatched = {day.isoformat(): {"table": held.get((day, tables.BATCH), 0), "curated": n}
                  for day, n in per_day.items() if held.get((day, tables.BATCH), 0) != n}
    return dg.MaterializeResult(
        metadata={"rows": rows.num_rows, "days": len(days), "window": f"[{days[0]}, {days[-1]}]",
                  "table": lake_table.catalog_config().identifier,
                  "snapshot_id": str(table.current_snapshot().snapshot_id)},
        check_results=[dg.AssetCheckResult(check_name="rows_match_curated", passed=not mismatched,
                                           metadata={"mismatched_days": dg.MetadataValue.json(mismatched)})],
    )


class LakeMaintenanceConfig(dg.Config):
    """Which partitions to compact, and how long history and stray files are kept."""

    compact_today: bool = False  # today's stream partition is still being appended to
    snapshot_retention_hours: float = maintenance.SNAPSHOT_RETENTION.total_seconds() / 3600
    orphan_grace_hours: float = maintenance.ORPHAN_GRACE.total_seconds() / 3600


@dg.asset(
    group_name=GROUP,
    retry_policy=TRANSIENT_IO_RETRY,
    kinds={"iceberg", "s3"},
    deps=[STREAM_TABLE_ASSET, BATCH_TABLE_ASSET],
    description="Upkeep of the lake's Iceberg table: stream rows brought up to the drain, partitions with more than a few files are rewritten into "
    "few large ones, snapshots older than the retention are expired, unreferenced files removed; records "
    "files per day before and after.",
)
def lake_downloads(context: dg.AssetExecutionContext, config: LakeMaintenanceConfig, s3: LakeS3Resource,
                   kinesis: KinesisResource, dynamodb: DynamoDBResource,
                   lake_table: LakeTableResource) -> dg.MaterializeResult:
    table = lake_table.open()
    synced = _sync(table, s3, kinesis, dynamodb)
    now = dt.datetime.now(dt.timezone.utc)
    before = maintenance.files_by_partition(table)
    compacted = []
    started = time.monotonic()
    for partition in before:
        if partition.files <= maintenance.SMALL_FILES or (partition.day >= now.date() and not config.compact_today):
            continue
        done = maintenance.compact_partition(table, partition.day, partition.source)
        compacted.append(done)
        context.log.info(f"compacted {done.day} {done.source}: {done.files_before} -> {done.files_after} files, "
                         f"{done.rows:,} rows")
    expired = maintenance.expire_snapshots(table, now=now, retention=dt.timedelta(hours=config.snapshot_retention_hours))
    sweep = maintenance.remove_orphan_files(table, s3.get_client(), now=now,
                                            grace=dt.timedelta(hours=config.orphan_grace_hours))
    after = maintenance.files_by_partition(table)
    per_day = {f"{p.day} {p.source}": p.files for p in after}
    return dg.MaterializeResult(metadata={
        "stream_rows_synced": sum(c.rows for c in synced),
        "partitions_compacted": len(compacted),
        "files_before": sum(p.files for p in before),
        "files_after": sum(p.files for p in after),
        "bytes_before": sum(p.bytes for p in before),
        "bytes_after": sum(p.bytes for p in after),
        "max_files_per_partition": max((p.files for p in after), default=0),
        "files_per_partition": dg.MetadataValue.json(per_day),
        "snapshots_expired": expired,
        "snapshots_kept": len(table.snapshots()),
        "orphan_files_removed": len(sweep.removed),
        "seconds": round(time.monotonic() - started, 3),
    })


@dg.asset_check(asset=lake_downloads, name="table_matches_warehouse",
                description="Per download_date and source, the table holds every event of downloads_stream / "
                "downloads_batch exactly once and nothing else (the stream's rows first brought up to the drain).")
def table_matches_warehouse(s3: LakeS3Resource, kinesis: KinesisResource, dynamodb: DynamoDBResource,
                            warehouse: WarehouseResource, lake_table: LakeTableResource) -> dg.AssetCheckResult:
    table = lake_table.open()
    with warehouse.connect() as engine:
        results = reconcile_lake_table(table, engine, lambda: _sync(table, s3, kinesis, dynamodb))
    return check_result(results, "the lake table")


def _sync(table, s3: LakeS3Resource, kinesis: KinesisResource, dynamodb: DynamoDBResource):
    """The table's stream rows brought up to where the drain has delivered (from Kinesis)."""
    leases = LeaseTable(dynamodb.get_client(), dynamodb.lease_table_name, kinesis.stream_name)
    return sync_stream_table(lambda: table, kinesis.get_client(), kinesis.stream_name, leases,
                             forgotten.ForgottenUsers(s3.get_client(), s3.bucket))


lake_maintenance_job = dg.define_asset_job(
    "lake_maintenance", selection=dg.AssetSelection.assets("lake_downloads"),
    description="Compaction, snapshot expiry and orphan-file removal of the lake's Iceberg table.")

lake_maintenance_hourly = dg.ScheduleDefinition(
    name="lake_maintenance_hourly", job=lake_maintenance_job, cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Past days' small files compacted, snapshots over a day old expired, stray files removed, and "
    "the table reconciled with the warehouse, every hour (the stream commits every 30 s).")
