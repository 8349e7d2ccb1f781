"""The drain sensor: keeps one consumer run per shard going, and the next one ready in time.

Each tick, per shard in KCL order (parents first): a shard delivered to its end (its lease item
says `shard_end`) needs nothing more; a child waits until each of its parents is; any other
shard needs a consumer run whose deadline is more than `HANDOVER_SECONDS` away. When the current
run nears its deadline, the next one is requested already: it starts, waits for the lease and
takes it the moment the current one hands it over, so a run start (seconds here, tens of seconds
for an ECS task) never opens a gap in the drain. After a failed run the next one comes after
growing delays; it drains the failed run's pending range first. A canceled run (stopped on
request: `appdata up` stopping, Terminate in the UI) is followed by the next one at once. A failed
run is logged as a warning once (the sensor's cursor keeps the runs already reported), not on
every tick. The sensor reads no records: ListShards, one GetItem per shard and one run query per
shard. While `downloads_stream` and its sibling sinks have never been materialized, each tick
records a baseline materialization (0 records), so their freshness policy counts from the time
the drain was first watched and turns red if nothing is delivered, instead of "not evaluated".
"""

import json
import time
from dataclasses import dataclass

import dagster as dg

from appdata.defs.resources import DynamoDBResource, KinesisResource
from appdata.defs.stream.drain import (
    DYNAMODB_ASSET, LAKE_ASSET, SHARD_TAG, TABLE_ASSET, UNTIL_TAG, WAREHOUSE_ASSET, drain_run_config,
    stream_drain_job,
)
from appdata.stream.drain import list_shards, parents_of, shard_order
from appdata.stream.leases import LeaseTable

RUN_SECONDS = 600.0  # one consumer run's life: long enough that run starts are rare
HANDOVER_SECONDS = 60.0  # the successor is requested this long before the deadline
ATTEMPT_TAG = "appdata/attempt"
RETRY_DELAY_BASE_SECONDS = 5.0
RETRY_DELAY_CAP_SECONDS = 300.0
WARNED_RUNS_KEPT = 50  # failed runs remembered in the cursor as already reported
FRESHNESS_ASSETS = (LAKE_ASSET, DYNAMODB_ASSET, WAREHOUSE_ASSET, TABLE_ASSET)
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]


def shard_tag_value(stream: str, shard_id: str) -> str:
    return f"{stream}.{shard_id}"


def retry_delay(attempt: int) -> float:
    """Seconds to wait after a consumer's failed attempt `attempt` (1, 2, ...) before the next one."""
    return min(RETRY_DELAY_CAP_SECONDS, RETRY_DELAY_BASE_SECONDS * 2 ** (attempt - 1))


@dataclass
class ShardRuns:
    """A shard's consumer runs, as far as the next request depends on them."""

    latest_until: float | None = None  # the furthest deadline among runs in flight
    failed: dg.RunRecord | None = None  # the newest run, when it failed or was canceled and none is in flight


def shard_runs(instance: dg.DagsterInstance | None, stream: str, shard_id: str) -> ShardRuns:
    if instance is None:
        return ShardRuns()
    tags = {SHARD_TAG: shard_tag_value(stream, shard_id)}
    in_flight = instance.get_run_records(filters=dg.RunsFilter(tags=tags, statuses=IN_FLIGHT))
    if in_flight:
        return ShardRuns(latest_until=max(float(r.dagster_run.tags.get(UNTIL_TAG, 0)) for r in in_flight))
    newest = instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1)
    if newest and newest[0].dagster_run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return ShardRuns(failed=newest[0])
    return ShardRuns()


def consumer_request(stream: str, shard_id: str, until: float, attempt: int = 1) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{stream}:{shard_id}:until-{until:.0f}",
        run_config=drain_run_config(stream, shard_id, until),
        tags={SHARD_TAG: shard_tag_value(stream, shard_id), "appdata/stream": stream, UNTIL_TAG: f"{until:.0f}",
              ATTEMPT_TAG: str(attempt)},
    )


def plan_requests(kinesis_client, leases: LeaseTable, instance: dg.DagsterInstance | None, *,
                  now: float | None = None, run_seconds: float = RUN_SECONDS,
                  handover_seconds: float = HANDOVER_SECONDS, warned: set[str] | None = None,
                  ) -> tuple[list[dg.RunRequest], list[tuple[str, str]]]:
    """One tick's work: (run requests, (level, line) to log). Pure over a Kinesis client, the lease
    table and the instance's run records, except for `warned`: the ids of failed runs already
    reported as a warning, to which each failed run reported now is added (it is then "info")."""
    now = time.time() if now is None else now
    notes: list[tuple[str, str]] = []
    requests: list[dg.RunRequest] = []
    stream = leases.stream
    shards = list_shards(kinesis_client, stream)
    known = {s["ShardId"] for s in shards}
    delivered = {s["ShardId"]: leases.get(s["ShardId"]).shard_end for s in shards}
    for shard in shard_order(shards):
        shard_id = shard["ShardId"]
        if delivered[shard_id]:
            continue
        waiting_for = [p for p in parents_of(shard) if p in known and not delivered[p]]  # gone ones are done
        if waiting_for:
            notes.append(("info", f"{shard_id}: waits for its parents {waiting_for} to be delivered (KCL order)"))
            continue
        runs = shard_runs(instance, stream, shard_id)
        if runs.latest_until is not None:
            if runs.latest_until - now > handover_seconds:
                continue
            requests.append(consumer_request(stream, shard_id, max(now, runs.latest_until) + run_seconds))
            notes.append(("info", f"{shard_id}: the consumer's deadline is near; the next one starts now"))
            continue
        attempt = 1
        if runs.failed is not None and runs.failed.dagster_run.status == dg.DagsterRunStatus.CANCELED:
            # stopped on request, not broken: the next consumer now (it drains any pending range first)
            notes.append(("info", f"{shard_id}: consumer run {runs.failed.dagster_run.run_id[:8]} was canceled; "
                                  "starting the next consumer"))
        elif runs.failed is not None:
            run = runs.failed.dagster_run
            attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
            ended_at = runs.failed.end_time or runs.failed.update_timestamp.timestamp()
            wait = retry_delay(attempt) - (now - ended_at)
            what = f"{shard_id}: consumer run {run.run_id[:8]} {run.status.value.lower()} (attempt {attempt})"
            level = "info" if warned is not None and run.run_id in warned else "warning"
            if warned is not None:
                warned.add(run.run_id)
            # One shape whatever the wait, so that a log reader can tell a repeat from a new problem.
            notes.append((level, f"{what}; next consumer in {max(0.0, wait):.0f}s (attempt {attempt + 1})"))
            if wait > 0:
                continue
            attempt += 1
        requests.append(consumer_request(stream, shard_id, now + run_seconds, attempt))
    return requests, notes


@dg.sensor(
    name="kinesis_drain_sensor",
    job=stream_drain_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one consumer run per Kinesis shard (parents first), and requests the next one before "
    "the current one's deadline so the hand-over leaves no gap.",
)
def kinesis_drain_sensor(context: dg.SensorEvaluationContext, kinesis: KinesisResource, dynamodb: DynamoDBResource):
    for materialization in freshness_baseline(context.instance):  # first, whatever the rest of the tick meets
        context.instance.report_runless_asset_event(materialization)
    leases = LeaseTable(dynamodb.get_client(), dynamodb.lease_table_name, kinesis.stream_name)
    kept = json.loads(context.cursor).get("warned", []) if context.cursor else []
    warned = set(kept)
    requests, notes = plan_requests(kinesis.get_client(), leases, context.instance, warned=warned)
    for level, note in notes:
        getattr(context.log, level)(note)
    new = [run_id for run_id in warned if run_id not in kept]
    cursor = json.dumps({"warned": (kept + new)[-WARNED_RUNS_KEPT:]}) if new else context.cursor
    if not requests:
        problems = [note for level, note in notes if "consumer run" in note and "canceled" not in note]
        return dg.SensorResult(skip_reason=problems[0] if problems else "every shard has its consumer", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def freshness_baseline(instance: dg.DagsterInstance | None) -> list[dg.AssetMaterialization]:
    """A baseline materialization (0 records) for each stream sink never materialized yet.

    Dagster evaluates a time-window freshness policy from the asset's last materialization only,
    and calls an asset without one "not evaluated" for ever: a drain that never delivered anything
    would never look late. The baseline says when the drain began to be watched (this tick), so
    the policy's windows count from there: warning after 5 minutes, failing after 15 without a
    delivery. Its metadata says what it is; the first real delivery replaces it as the latest."""
    if instance is None:
        return []
    return [dg.AssetMaterialization(
        key, description="Baseline: nothing delivered yet. Recorded by kinesis_drain_sensor when it first "
        "watched the drain, so the freshness policy counts from here (red if nothing arrives in its window).",
        metadata={"baseline": True, "records": 0})
        for key in FRESHNESS_ASSETS if instance.get_latest_materialization_event(key) is None]
