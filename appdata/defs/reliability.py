"""Reconciliation as Dagster asset checks, one result covering each day the run touched, with
the jobs and schedules that run them on their own (hourly reconciliation, stopped by default:
on real AWS each run scans the DynamoDB table once; the stream client's delivery check every
5 minutes, on by default: cheap, and what turns red when the client posts but nothing drains).

stream (on `downloads_stream`): what the Kinesis stream accepted (read from TRIM_HORIZON and
decoded as the drain decodes it, records over 5 minutes old) = distinct events in the lake =
DynamoDB download items = `downloads_stream`, every day the stream or a sink holds; an event in
no sink is named. batch (on `downloads_batch`): the day's
landing rows = curated + rejected, curated = `downloads_batch`, for the run's partition window
(or every day with landing data when run on its own). A failing check's description names the
day and the missing, extra or duplicated event ids; its metadata lists them per day and sink.
"""

import datetime as dt
import time

import dagster as dg
from pydantic import Field

from appdata.defs.resources import (
    DynamoDBResource,
    KinesisResource,
    LakeS3Resource,
    SimulatedClientsResource,
    WarehouseResource,
)
from appdata.reliability.reconcile import (
    STREAM_GRACE_SECONDS,
    DayReconciliation,
    client_delivery,
    reconcile_batch,
    reconcile_stream_against_source,
)

STREAM_ASSET = dg.AssetKey("downloads_stream")
BATCH_ASSET = dg.AssetKey("downloads_batch")
DESCRIPTION_LIMIT = 4000
# The client posts every minute and the consumers drain within seconds: an event accepted two minutes
# ago and still not in the warehouse means the drain is stalled or lost it.
DELIVERY_GRACE_SECONDS = 120.0
DELIVERY_WINDOW_SECONDS = 24 * 3600.0


def check_result(reconciliations: list[DayReconciliation], what: str, extra: dict | None = None
                 ) -> dg.AssetCheckResult:
    """Pass when every day reconciles; otherwise name each failing day and its event ids."""
    failing = [r for r in reconciliations if not r.ok]
    days = [r.day for r in reconciliations]
    metadata = {
        "days_checked": len(days),
        "first_day": days[0] if days else "-",
        "last_day": days[-1] if days else "-",
        "failing_days": dg.MetadataValue.json([r.day for r in failing]),
        "per_day": dg.MetadataValue.json({r.day: r.counts for r in reconciliations}),
        **(extra or {}),
    }
    if failing:
        metadata["differences"] = dg.MetadataValue.json({r.day: r.as_dict()["sinks"] for r in failing})
        description = " || ".join(r.describe() for r in failing)
        if len(description) > DESCRIPTION_LIMIT:
            description = description[:DESCRIPTION_LIMIT] + " ... (see metadata `differences`)"
    elif days:
        description = f"{what}: {len(days)} day(s) reconciled ({days[0]}..{days[-1]})"
    else:
        description = f"{what}: nothing to reconcile yet"
    return dg.AssetCheckResult(passed=not failing, description=description, metadata=metadata,
                               severity=dg.AssetCheckSeverity.ERROR)


def _window_days(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The run's partition window as days, or None for a run without partitions."""
    try:
        if not (context.has_partition_key or context.has_partition_key_range):
            return None
        window = context.partition_time_window
    except Exception:  # noqa: BLE001 - an unpartitioned run has no window
        return None
    start = window.start.date()
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((window.end.date() - start).days)]


class StreamReconciledConfig(dg.Config):
    grace_seconds: float = Field(
        default=STREAM_GRACE_SECONDS,
        description="Records that arrived on the stream less than this long ago are in flight: not judged yet.",
    )


@dg.asset_check(
    asset=STREAM_ASSET,
    name="stream_reconciled",
    pool="warehouse",  # the embedded DuckDB file locks out other processes, readers included
    description="Per day: every event the Kinesis stream accepted (decoded as the drain does, arrived "
    f"over {STREAM_GRACE_SECONDS:.0f} s ago) is in the lake, DynamoDB and downloads_stream exactly once, "
    "by event id (none missing from a sink or from all of them, extra or doubled); every record the "
    "drain rejects has a dead letter.",
)
def stream_reconciled(
    context: dg.AssetCheckExecutionContext, config: StreamReconciledConfig, s3: LakeS3Resource,
    kinesis: KinesisResource, dynamodb: DynamoDBResource, warehouse: WarehouseResource,
) -> dg.AssetCheckResult:
    with warehouse.connect() as engine:
        results, reference = reconcile_stream_against_source(
            s3=s3.get_client(), bucket=s3.bucket, dynamodb=dynamodb.get_client(), table=dynamodb.table_name,
            engine=engine, kinesis=kinesis.get_client(), stream=kinesis.stream_name,
            grace_seconds=config.grace_seconds)
    context.log.info(reference.describe())
    for r in results:
        context.log.info(r.describe())
    summary = reference.summary()
    return check_result(results, "stream", {
        "stream_records": summary["records"], "stream_in_flight": summary["in_flight_records"],
        "grace_seconds": config.grace_seconds,
        "lost": dg.MetadataValue.json({r.day: r.as_dict()["lost"] for r in results if r.lost}),
    })


@dg.asset_check(
    asset=BATCH_ASSET,
    name="batch_reconciled",
    pool="warehouse",
    description="Per day: landing rows = curated + rejected rows, and curated = downloads_batch rows, "
    "by event id (no row lost, invented or doubled).",
)
def batch_reconciled(
    context: dg.AssetCheckExecutionContext, s3: LakeS3Resource, warehouse: WarehouseResource,
) -> dg.AssetCheckResult:
    client = s3.get_client()
    with warehouse.connect() as engine:
        days = _window_days(context)
        results = reconcile_batch(s3=client, bucket=s3.bucket, engine=engine, days=days)
    for r in results:
        context.log.info(r.describe())
    return check_result(results, "batch")


@dg.asset_check(
    asset=STREAM_ASSET,
    name="stream_client_delivered",
    pool="warehouse",
    description="Every event the API accepted from the stream client (its ledger, last 24 h) more than "
    f"{DELIVERY_GRACE_SECONDS:.0f} s ago is in downloads_stream: red when the client posts and the "
    "warehouse does not grow by it.",
)
def stream_client_delivered(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                            clients: SimulatedClientsResource) -> dg.AssetCheckResult:
    from appdata.stream.client import read_accepted
    from appdata.sources.client_files import stream_ledger_path

    now = time.time()
    entries = read_accepted(stream_ledger_path(clients.client_path), since=now - DELIVERY_WINDOW_SECONDS)
    with warehouse.connect() as engine:
        delivery = client_delivery(entries, engine, now=now, grace_seconds=DELIVERY_GRACE_SECONDS)
    context.log.info(delivery.describe())
    return dg.AssetCheckResult(
        passed=delivery.ok, severity=dg.AssetCheckSeverity.ERROR, description=delivery.describe(),
        metadata={"accepted": delivery.accepted, "due": delivery.due, "delivered": delivery.delivered,
                  "missing": len(delivery.missing), "pending": delivery.pending,
                  "missing_event_ids": dg.MetadataValue.json(delivery.missing[:1000])},
    )


reconciliation_job = dg.define_asset_job(
    "reconciliation_job",
    selection=dg.AssetSelection.checks(stream_reconciled, batch_reconciled),
    description="Reconcile every stream day and every batch day with landing data, by event id.",
)
stream_delivery_check_job = dg.define_asset_job(
    "stream_delivery_check_job",
    selection=dg.AssetSelection.checks(stream_client_delivered),
    executor_def=dg.in_process_executor,
    description="Is every event the stream client had accepted in downloads_stream?",
)
reconciliation_hourly = dg.ScheduleDefinition(
    name="reconciliation_hourly", job=reconciliation_job, cron_schedule="30 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly reconciliation of every sink (turn on in the UI).",
)
stream_delivery_every_5_minutes = dg.ScheduleDefinition(
    name="stream_delivery_every_5_minutes", job=stream_delivery_check_job, cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The stream client's accepted events must reach downloads_stream.",
)
