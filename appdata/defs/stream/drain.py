"""The drain as assets (group `stream`): one run drains one shard range into three sinks.

One multi-asset materializes the lake, the DynamoDB downloads and `downloads_stream` together,
so lineage shows Kinesis feeding all three and each materialization carries the range's counts.
It writes the warehouse, hence pool "warehouse".
"""

import datetime as dt

import dagster as dg

from appdata.defs.resources import DynamoDBResource, KinesisResource, LakeS3Resource, WarehouseResource
from appdata.stream.drain import drain_range

GROUP = "stream"
KINESIS_ASSET = dg.AssetKey("kinesis_downloads")
LAKE_ASSET = dg.AssetKey("stream_lake")
DYNAMODB_ASSET = dg.AssetKey("dynamodb_downloads")
WAREHOUSE_ASSET = dg.AssetKey("downloads_stream")
DRAIN_OP = "stream_drain"
SHARD_TAG = "appdata/shard"
# The clients post all day (the local one every minute) and the sensor drains within seconds, so
# a sink not updated for minutes means the drain stalled; a stream silent that long deserves a
# look too. The UI shows each asset fresh, warning or failing against this.
STREAM_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(minutes=15),
                                                   warn_window=dt.timedelta(minutes=5))

kinesis_downloads = dg.AssetSpec(
    KINESIS_ASSET,
    group_name=GROUP,
    kinds={"kinesis"},
    description="The Kinesis stream the ingest API writes app-download events to (external).",
)


class DrainConfig(dg.Config):
    """One shard range, inclusive at both ends (AT_SEQUENCE_NUMBER first .. last)."""

    stream: str
    shard_id: str
    first_sequence: str
    last_sequence: str


@dg.multi_asset(
    name=DRAIN_OP,
    group_name=GROUP,
    pool="warehouse",
    specs=[
        dg.AssetSpec(LAKE_ASSET, deps=[KINESIS_ASSET], kinds={"s3", "json"}, freshness_policy=STREAM_FRESHNESS,
                     description="s3://<bucket>/lake/stream/download_date=/hour=/<shard>-<first>-<last>.jsonl.gz"),
        dg.AssetSpec(DYNAMODB_ASSET, deps=[KINESIS_ASSET], kinds={"dynamodb"}, freshness_policy=STREAM_FRESHNESS,
                     description="Download items (user_id, DL#<date>#<event_id>) served by GET /v1/users/{id}/downloads"),
        dg.AssetSpec(WAREHOUSE_ASSET, deps=[KINESIS_ASSET], kinds={"sql"}, freshness_policy=STREAM_FRESHNESS,
                     description="Warehouse table downloads_stream, deduplicated on event_id"),
    ],
    description="Drain one Kinesis shard range into the lake, DynamoDB and the warehouse (idempotent).",
)
def stream_drain(
    context: dg.AssetExecutionContext,
    config: DrainConfig,
    s3: LakeS3Resource,
    kinesis: KinesisResource,
    dynamodb: DynamoDBResource,
    warehouse: WarehouseResource,
):
    with warehouse.connect() as engine:
        result = drain_range(
            kinesis=kinesis.get_client(), stream=config.stream, shard_id=config.shard_id,
            first_sequence=config.first_sequence, last_sequence=config.last_sequence,
            s3=s3.get_client(), bucket=s3.bucket, dynamodb=dynamodb.get_client(), table=dynamodb.table_name,
            engine=engine, copy_iam_role=warehouse.copy_iam_role,
        )
        summary = result.summary()
        context.log.info(f"drained {summary}")
        users = sorted(result.users)
        refreshed = _refresh_recommendations(context, engine, dynamodb, users)
    common = {
        "shard_id": config.shard_id,
        "sequence_range": f"{config.first_sequence}-{config.last_sequence}",
        "records": result.records,
        "rejected": result.rejected,
        "users_touched": len(users),
        "users": dg.MetadataValue.json(users[:1000]),
        **_lag_metadata(result.newest_arrival, result.millis_behind_latest),
    }
    yield dg.MaterializeResult(asset_key=LAKE_ASSET, metadata={
        **common, "objects_written": len(result.lake_objects),
        "objects": dg.MetadataValue.json(result.lake_objects),
        "rejected_objects": dg.MetadataValue.json(result.rejected_objects),
    })
    yield dg.MaterializeResult(asset_key=DYNAMODB_ASSET, metadata={
        **common, "items_written": result.dynamodb_items, "recommendations_refreshed": refreshed,
    })
    yield dg.MaterializeResult(asset_key=WAREHOUSE_ASSET,
                               metadata={**common, "rows_inserted": result.warehouse_inserted})


def _lag_metadata(newest_arrival: dt.datetime | None, millis_behind_latest: int | None) -> dict:
    """How fresh this drain left the sinks: the age of the range's newest record once written
    (arrival on Kinesis -> in every sink), and how far the range's end trailed the shard's newest
    record (Kinesis' MillisBehindLatest): a growing figure means the drain is falling behind."""
    lag = {}
    if newest_arrival is not None:
        age = dt.datetime.now(dt.timezone.utc) - newest_arrival
        lag["newest_record_age_seconds"] = round(age.total_seconds(), 3)
    if millis_behind_latest is not None:
        lag["behind_shard_tip_seconds"] = millis_behind_latest / 1000
    return lag


def _refresh_recommendations(context: dg.AssetExecutionContext, engine, dynamodb: DynamoDBResource,
                             users: list[int]) -> int:
    """Fresh recommendations for the users this range touched, so a new download shows up in
    GET /v1/users/{id}/recommendations within the stream's freshness target. A failure here is
    logged, not raised: the drained data is safe and user_recommendations rewrites every user when
    mart_charts next changes."""
    from appdata.analytics.recommend import refresh_user_recommendations

    if not users:
        return 0
    try:
        return refresh_user_recommendations(engine, dynamodb, users)
    except Exception as exc:  # noqa: BLE001 - derived data; the drain itself succeeded
        context.log.warning(f"recommendations not refreshed for {len(users)} users: {exc!r}")
        return 0


stream_drain_job = dg.define_asset_job(
    "stream_drain_job",
    # Without the reconciliation checks: they scan whole sinks and run on their own schedule.
    selection=dg.AssetSelection.assets(LAKE_ASSET, DYNAMODB_ASSET, WAREHOUSE_ASSET).without_checks(),
    # One step: running it in the run's own process saves a step-process start (seconds of freshness).
    executor_def=dg.in_process_executor,
    description="One shard range per run; the drain sensor requests it.",
)


def drain_run_config(stream: str, shard_id: str, first: str, last: str) -> dict:
    return {"ops": {DRAIN_OP: {"config": {"stream": stream, "shard_id": shard_id,
                                          "first_sequence": first, "last_sequence": last}}}}
