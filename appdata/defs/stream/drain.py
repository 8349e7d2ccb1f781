"""The drain as assets (group `stream`): one run consumes one shard for a bounded time.

One multi-asset stands for the lake, the DynamoDB downloads and `downloads_stream` together, so
lineage shows Kinesis feeding all three. Its run is a long-lived shard consumer
(`appdata.stream.consumer`): it holds the shard's lease, drains range after range about a second
after they arrive, and every `report_seconds` records one materialization per sink with the
ranges, counts and lag of that window; at `until_epoch` it hands the lease to the next run,
which the sensor started beforehand. It takes no "warehouse" pool slot (it would hold it for the
whole run): each range opens the warehouse only while writing it.
"""

import datetime as dt
import threading
import time
from dataclasses import dataclass, field

import dagster as dg

from appdata.defs.resources import (
    DynamoDBResource, KinesisResource, LakeS3Resource, LakeTableResource, WarehouseResource,
)
from appdata.privacy import forgotten
from appdata.stream.consumer import FollowUp, ShardConsumer, Sinks, stream_created
from appdata.stream.drain import DrainResult, list_shards, parents_of
from appdata.stream.leases import LeaseTable
from appdata.stream.table_writer import StreamTableWriter, TableCommit

GROUP = "stream"
KINESIS_ASSET = dg.AssetKey("kinesis_downloads")
LAKE_ASSET = dg.AssetKey("stream_lake")
DYNAMODB_ASSET = dg.AssetKey("dynamodb_downloads")
WAREHOUSE_ASSET = dg.AssetKey("downloads_stream")
TABLE_ASSET = dg.AssetKey("lake_downloads_stream")
DRAIN_OP = "stream_drain"
SHARD_TAG = "appdata/shard"
UNTIL_TAG = "appdata/until"
LISTED_OBJECTS = 100  # lake objects named in one materialization's metadata (all are counted)
# The clients post all day (the local one every minute) and the drain keeps up within seconds, so
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
    """One shard, consumed until `until_epoch` (Unix seconds), then handed over; or, with
    `stop_when_caught_up` (a one-off drain from the launchpad, tests), until nothing is waiting."""

    stream: str
    shard_id: str
    until_epoch: float
    stop_when_caught_up: bool = False
    report_seconds: float = 30.0


@dataclass
class DrainWindow:
    """What the consumer delivered since the last materialization (thread-safe: the follow-up
    thread adds its recommendation counts)."""

    ranges: list[DrainResult] = field(default_factory=list)
    recommendations: int = 0
    recommendation_seconds: float = 0.0
    recommender: dict = field(default_factory=dict)  # the latest refresh's model facts (fitted at, age, ...)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_range(self, result: DrainResult) -> None:
        with self.lock:
            self.ranges.append(result)

    def add_recommendations(self, refreshed, seconds: float) -> None:
        with self.lock:
            self.recommendations += refreshed.items_written
            self.recommendation_seconds += seconds
            self.recommender = {key: value for key, value in refreshed.as_metadata().items()
                                if key.startswith(("recommender_", "apps_newer"))}

    def take(self) -> tuple[list[DrainResult], int, float, dict]:
        with self.lock:
            taken = (self.ranges, self.recommendations, self.recommendation_seconds, self.recommender)
            self.ranges, self.recommendations, self.recommendation_seconds = [], 0, 0.0
        return taken


def window_metadata(shard_id: str, ranges: list[DrainResult], delivered_at: dict[int, float]) -> dict:
    """The metadata every sink's materialization shares: ranges, counts and how fresh."""
    users = set().union(*(r.users for r in ranges))
    lags = [delivered_at[id(r)] - r.newest_arrival.timestamp() for r in ranges if r.newest_arrival is not None]
    last = ranges[-1]
    metadata = {
        "shard_id": shard_id,
        "sequence_range": f"{ranges[0].first_sequence}-{last.last_sequence}",
        "ranges": len(ranges),
        "records": sum(r.records for r in ranges),
        "rejected": sum(r.rejected for r in ranges),
        "users_touched": len(users),
    }
    if lags:
        # arrival on Kinesis -> in every sink, of each range's newest record
        metadata["newest_record_age_seconds"] = round(lags[-1], 3)
        metadata["max_record_age_seconds"] = round(max(lags), 3)
    if last.millis_behind_latest is not None:
        # how far the last range's end trailed the shard's newest record (MillisBehindLatest)
        metadata["behind_shard_tip_seconds"] = last.millis_behind_latest / 1000
    return metadata


@dg.multi_asset(
    name=DRAIN_OP,
    specs=[
        dg.AssetSpec(LAKE_ASSET, group_name=GROUP, deps=[KINESIS_ASSET], kinds={"s3", "json"}, freshness_policy=STREAM_FRESHNESS,
                     skippable=True,
                     description="s3://<bucket>/lake/stream/download_date=/hour=/<shard>-<first>-<last>.jsonl.gz"),
        dg.AssetSpec(DYNAMODB_ASSET, group_name=GROUP, deps=[KINESIS_ASSET], kinds={"dynamodb"}, freshness_policy=STREAM_FRESHNESS,
                     skippable=True,
                     description="Download items (user_id, DL#<date>#<event_id>) served by GET /v1/users/{id}/downloads"),
        dg.AssetSpec(WAREHOUSE_ASSET, group_name=GROUP, deps=[KINESIS_ASSET], kinds={"sql"}, freshness_policy=STREAM_FRESHNESS,
                     skippable=True, description="Warehouse table downloads_stream, deduplicated on event_id"),
        dg.AssetSpec(TABLE_ASSET, deps=[KINESIS_ASSET], kinds={"iceberg", "s3"}, freshness_policy=STREAM_FRESHNESS,
                     skippable=True, group_name="lake",
                     description="The stream's rows (source = 'stream') of the lake's Iceberg table <namespace>.downloads: "
                     "committed about every 30 s, each event once, with the shard's last sequence number in the commit"),
    ],
    description="Consume one Kinesis shard into the lake, DynamoDB and the warehouse until the run's deadline "
    "(exactly-once effects through the shard's lease and checkpoint).",
)
def stream_drain(
    context: dg.AssetExecutionContext,
    config: DrainConfig,
    s3: LakeS3Resource,
    kinesis: KinesisResource,
    dynamodb: DynamoDBResource,
    warehouse: WarehouseResource,
    lake_table: LakeTableResource,
):
    kinesis_client = kinesis.get_client()
    dynamodb_client = dynamodb.get_client()
    shards = {s["ShardId"]: s for s in list_shards(kinesis_client, config.stream)}
    if config.shard_id not in shards:
        raise dg.Failure(f"shard {config.shard_id} is not in stream {config.stream}", allow_retries=False)
    window = DrainWindow()
    delivered_at: dict[int, float] = {}
    totals = {"ranges": 0, "records": 0, "rejected": 0}

    last_report = [time.monotonic()]

    leases = LeaseTable(dynamodb_client, dynamodb.lease_table_name, config.stream)
    s3_client = s3.get_client()
    table_writer = StreamTableWriter(open_table=lake_table.open, kinesis=kinesis_client, stream=config.stream,
                                     shard_id=config.shard_id, delivered=lambda: leases.get(config.shard_id).checkpoint,
                                     users=forgotten.ForgottenUsers(s3_client, s3.bucket))

    def on_range(result: DrainResult) -> None:
        delivered_at[id(result)] = time.time()
        window.add_range(result)
        table_writer.add(result)
        follow_up.add(result.users)
        report_if_due()

    def report_if_due() -> None:
        if table_writer.due():
            commit_table()
        if time.monotonic() - last_report[0] >= config.report_seconds:
            report()

    def commit_table() -> None:
        try:
            committed = table_writer.commit()
        except Exception as exc:  # noqa: BLE001 - the drained data is safe; the next commit reads the gap again
            context.log.warning(f"{config.shard_id}: lake table not committed ({exc!r}); the next commit catches up")
            return
        if committed is not None:
            context.log_event(dg.AssetMaterialization(TABLE_ASSET, metadata=table_commit_metadata(committed)))

    def pause(seconds: float) -> None:  # the consumer's pauses, when caught up
        report_if_due()
        time.sleep(seconds)

    def report() -> None:
        last_report[0] = time.monotonic()
        ranges, recommendations, rec_seconds, recommender = window.take()
        if not ranges:
            return
        common = window_metadata(config.shard_id, ranges, delivered_at)
        for r in ranges:
            delivered_at.pop(id(r), None)
        for key in totals:
            totals[key] += common.get(key, 0)
        objects = [key for r in ranges for key in r.lake_objects]
        rejected_objects = [key for r in ranges for key in r.rejected_objects]
        context.log_event(dg.AssetMaterialization(LAKE_ASSET, metadata={
            **common, "objects_written": len(objects), "objects": dg.MetadataValue.json(objects[:LISTED_OBJECTS]),
            "rejected_objects": dg.MetadataValue.json(rejected_objects[:LISTED_OBJECTS])}))
        context.log_event(dg.AssetMaterialization(DYNAMODB_ASSET, metadata={
            **common, "items_written": sum(r.dynamodb_items for r in ranges),
            "recommendations_refreshed": recommendations,
            "recommendations_seconds": round(rec_seconds, 3), **recommender}))
        context.log_event(dg.AssetMaterialization(WAREHOUSE_ASSET, metadata={
            **common, "rows_inserted": sum(r.warehouse_inserted for r in ranges)}))
        context.log.info(f"{config.shard_id}: {common['records']} records in {common['ranges']} ranges "
                         f"({common['sequence_range']}); {common.get('behind_shard_tip_seconds', 0)} s behind the tip")

    follow_up = FollowUp(
        work=lambda users: _refresh_recommendations(warehouse, s3, dynamodb, users),
        on_done=lambda users, refreshed, seconds: window.add_recommendations(refreshed, seconds),
        on_error=lambda users, exc: context.log.warning(
            f"recommendations not refreshed for {len(users)} users: {exc!r}; the full refresh catches up"),
    )
    consumer = ShardConsumer(
        kinesis=kinesis_client, stream=config.stream, shard_id=config.shard_id,
        parents=parents_of(shards[config.shard_id]),
        leases=leases,
        owner=f"run-{context.run_id}", created=stream_created(kinesis_client, config.stream),
        sinks=Sinks(s3=s3_client, bucket=s3.bucket, dynamodb=dynamodb_client, table=dynamodb.table_name,
                    warehouse=warehouse.connect, copy_iam_role=warehouse.copy_iam_role),
        on_range=on_range,
        on_note=lambda level, text: getattr(context.log, level)(text),
        sleep=pause,
    )
    stopped = False
    try:
        summary = consumer.run(until=config.until_epoch, stop_when_caught_up=config.stop_when_caught_up,
                               wait_for_lease_seconds=0.0 if config.stop_when_caught_up else float("inf"))
    except dg.DagsterExecutionInterruptedError:
        # Asked to stop (a deployment, `appdata up` stopping, Terminate in the UI): the consumer has
        # handed its lease over; a range it was writing stays pending for the next consumer.
        stopped = True
    finally:
        # Stopping, the whole stack has seconds (`docker stop`: 10): a recommendation refresh in
        # progress is abandoned (the drained data is safe; the full refresh catches up).
        follow_up.close(timeout=1 if stopped else 120)
        if not stopped:
            commit_table()  # stopping, the successor's first commit takes what is buffered from Kinesis
        report()
    ended = "stopped on request" if stopped else f"shard end: {summary.shard_end}"
    context.log.info(f"{config.shard_id}: consumer done: {totals['records']} records in {totals['ranges']} ranges, "
                     f"{totals['rejected']} rejected; {ended}")
    yield from ()


def table_commit_metadata(committed: TableCommit) -> dict:
    return {"shard_id": committed.shard_id, "rows_appended": committed.rows, "up_to_sequence": committed.last_sequence,
            "rows_read_again_from_kinesis": committed.recovered_rows, "commit_seconds": committed.seconds}


def _refresh_recommendations(warehouse: WarehouseResource, s3: LakeS3Resource, dynamodb: DynamoDBResource,
                             users: list[int]):
    """Fresh recommendations for the users the drain touched, scored with the saved model from
    their own downloads only (cost in proportion to them), so a new download shows up in
    GET /v1/users/{id}/recommendations soon after it lands."""
    from appdata.analytics.recommend import refresh_touched_users

    with warehouse.connect() as engine:
        return refresh_touched_users(engine, s3.get_client(), s3.bucket, dynamodb.get_client(), dynamodb.table_name,
                                     users)


stream_drain_job = dg.define_asset_job(
    "stream_drain_job",
    # Without the reconciliation checks: they scan whole sinks and run on their own schedule.
    selection=dg.AssetSelection.assets(LAKE_ASSET, DYNAMODB_ASSET, WAREHOUSE_ASSET, TABLE_ASSET).without_checks(),
    # One step: running it in the run's own process saves a step-process start.
    executor_def=dg.in_process_executor,
    description="One shard consumer per run, until its deadline; the drain sensor requests them.",
)


def drain_run_config(stream: str, shard_id: str, until_epoch: float = float("inf"), *,
                     stop_when_caught_up: bool = False) -> dict:
    config = {"stream": stream, "shard_id": shard_id, "until_epoch": until_epoch,
              "stop_when_caught_up": stop_when_caught_up}
    return {"ops": {DRAIN_OP: {"config": config}}}
