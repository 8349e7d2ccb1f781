"""The drain sensor: finds new records per shard and requests one drain run per shard range.

Cheap by design (far under Dagster's 60 s sensor limit): it only reads ahead with bounded
GetRecords calls to learn each range's first and last sequence numbers; the run re-reads
that exact range and does the writing. Cursor (JSON): {"shards": {shard: last sequence
requested}, "ended": [closed shards read to their end]}. Shards are visited parents first;
a child starts only after its parents are ended and their last run is done (KCL order).
"""

import json
import time

import dagster as dg

from appdata.resources import KinesisResource
from appdata.stream.assets import SHARD_TAG, drain_run_config, stream_drain_job
from appdata.stream.drain import list_shards, parents_of, read_shard, shard_order

MAX_RECORDS_PER_RUN = 10_000
TICK_BUDGET_SECONDS = 20.0
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]


def shard_tag_value(stream: str, shard_id: str) -> str:
    return f"{stream}.{shard_id}"


def run_key(stream: str, shard_id: str, first: str, last: str) -> str:
    return f"{stream}:{shard_id}:{first}-{last}"


def load_cursor(raw: str | None) -> dict:
    state = json.loads(raw) if raw else {}
    return {"shards": dict(state.get("shards", {})), "ended": list(state.get("ended", []))}


def _busy(instance: dg.DagsterInstance | None, stream: str, shard_id: str) -> bool:
    """A drain run of this shard is queued or running: do not request the next range yet."""
    if instance is None:
        return False
    runs = instance.get_run_records(
        filters=dg.RunsFilter(tags={SHARD_TAG: shard_tag_value(stream, shard_id)}, statuses=IN_FLIGHT), limit=1
    )
    return bool(runs)


def plan_requests(
    kinesis_client, stream: str, cursor: dict, instance: dg.DagsterInstance | None = None, *,
    max_records: int = MAX_RECORDS_PER_RUN, budget_seconds: float = TICK_BUDGET_SECONDS,
) -> tuple[list[dg.RunRequest], dict, list[str]]:
    """One tick's work: (run requests, new cursor, log lines). Pure over a Kinesis client."""
    started = time.monotonic()
    shards = list_shards(kinesis_client, stream)
    known = {s["ShardId"] for s in shards}
    positions = dict(cursor["shards"])
    ended = list(cursor["ended"])
    ended_now: set[str] = set()
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for shard in shard_order(shards):
        shard_id = shard["ShardId"]
        if shard_id in ended:
            continue
        if time.monotonic() - started > budget_seconds:
            notes.append(f"tick budget spent; {shard_id} and later shards wait for the next tick")
            break
        parents = [p for p in parents_of(shard) if p in known]  # parents past retention are gone: done
        if any(p not in ended or p in ended_now or _busy(instance, stream, p) for p in parents):
            continue
        if _busy(instance, stream, shard_id):
            continue
        read = read_shard(kinesis_client, stream, shard_id, after=positions.get(shard_id), max_records=max_records)
        if read.records:
            first, last = read.records[0]["SequenceNumber"], read.records[-1]["SequenceNumber"]
            requests.append(dg.RunRequest(
                run_key=run_key(stream, shard_id, first, last),
                run_config=drain_run_config(stream, shard_id, first, last),
                tags={SHARD_TAG: shard_tag_value(stream, shard_id), "appdata/stream": stream,
                      "appdata/first_sequence": first, "appdata/last_sequence": last,
                      "appdata/records": str(len(read.records))},
            ))
            positions[shard_id] = last
            notes.append(f"{shard_id}: {len(read.records)} records {first}..{last}")
        if read.shard_end:
            ended.append(shard_id)
            ended_now.add(shard_id)
            notes.append(f"{shard_id}: closed and read to its end; children may start after its last run")
    # forget shards that no longer exist (trimmed after retention)
    positions = {k: v for k, v in positions.items() if k in known}
    ended = [s for s in ended if s in known]
    return requests, {"shards": positions, "ended": ended}, notes


@dg.sensor(
    name="kinesis_drain_sensor",
    job=stream_drain_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one drain run per new Kinesis shard range (run key stream:shard:first-last); "
    "at most one run per shard in flight.",
)
def kinesis_drain_sensor(context: dg.SensorEvaluationContext, kinesis: KinesisResource):
    cursor = load_cursor(context.cursor)
    instance = context.instance if _has_instance(context) else None
    requests, new_cursor, notes = plan_requests(kinesis.get_client(), kinesis.stream_name, cursor, instance)
    for note in notes:
        context.log.info(note)
    if not requests and new_cursor == cursor:
        return dg.SensorResult(skip_reason="no new records", cursor=json.dumps(new_cursor, sort_keys=True))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(new_cursor, sort_keys=True))


def _has_instance(context: dg.SensorEvaluationContext) -> bool:
    try:
        context.instance  # noqa: B018 - raises when the test built no instance
        return True
    except Exception:  # noqa: BLE001
        return False
