"""The drain sensor: finds new records per shard and requests one drain run per shard range.

Cheap by design (far under Dagster's 60 s sensor limit): it only reads ahead with bounded
GetRecords calls to learn each range's first and last sequence numbers; the run re-reads
that exact range and does the writing. Cursor (JSON): {"stream": {"arn", "created"},
"shards": {shard: last sequence requested}, "ended": [closed shards read to their end]}.
Shards are visited parents first; a child starts only after its parents are ended and their
last run is done (KCL order). A range whose run failed is requested again, with growing
delays, before the shard moves on; a re-created stream is logged as an error and read anew.
"""

import json
import time
from dataclasses import dataclass

import dagster as dg
from botocore.exceptions import ClientError

from appdata.defs.resources import KinesisResource
from appdata.defs.stream.drain import SHARD_TAG, drain_run_config, stream_drain_job
from appdata.aws import error_code
from appdata.stream.drain import list_shards, parents_of, read_shard, shard_order

MAX_RECORDS_PER_RUN = 10_000
TICK_BUDGET_SECONDS = 20.0
ATTEMPT_TAG = "appdata/attempt"
RETRY_DELAY_BASE_SECONDS = 5.0
RETRY_DELAY_CAP_SECONDS = 300.0
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
    cursor = {"shards": dict(state.get("shards", {})), "ended": list(state.get("ended", []))}
    if state.get("stream"):
        cursor["stream"] = dict(state["stream"])
    return cursor


def stream_identity(kinesis_client, stream: str) -> dict:
    """What makes this stream this stream: a deleted and re-created one (an emulator that lost
    its state, a redeploy) has the same name but a new creation time, and restarts its
    sequence numbers, so positions saved for the old one point nowhere."""
    summary = kinesis_client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    return {"arn": summary["StreamARN"], "created": summary["StreamCreationTimestamp"].isoformat()}


@dataclass
class ShardRuns:
    """The newest drain run of a shard, as far as the next request depends on it."""

    busy: bool = False
    failed: dg.RunRecord | None = None  # the newest run failed or was canceled: its range is not delivered


def shard_runs(instance: dg.DagsterInstance | None, stream: str, shard_id: str) -> ShardRuns:
    if instance is None:
        return ShardRuns()
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={SHARD_TAG: shard_tag_value(stream, shard_id)}), limit=1)
    if not records:
        return ShardRuns()
    status = records[0].dagster_run.status
    if status in IN_FLIGHT:
        return ShardRuns(busy=True)
    if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return ShardRuns(failed=records[0])
    return ShardRuns()


def retry_delay(attempt: int) -> float:
    """Seconds to wait after a range's failed attempt `attempt` (1, 2, ...) before the next one."""
    return min(RETRY_DELAY_CAP_SECONDS, RETRY_DELAY_BASE_SECONDS * 2 ** (attempt - 1))


def drain_request(stream: str, shard_id: str, first: str, last: str, records: int | str, attempt: int = 1
                  ) -> dg.RunRequest:
    key = run_key(stream, shard_id, first, last) + (f":attempt-{attempt}" if attempt > 1 else "")
    return dg.RunRequest(
        run_key=key,
        run_config=drain_run_config(stream, shard_id, first, last),
        tags={SHARD_TAG: shard_tag_value(stream, shard_id), "appdata/stream": stream,
              "appdata/first_sequence": first, "appdata/last_sequence": last,
              "appdata/records": str(records), ATTEMPT_TAG: str(attempt)},
    )


def retry_failed(failed: dg.RunRecord, now: float) -> tuple[dg.RunRequest | None, str]:
    """The failed range requested again (with growing delays), and the line to log about it."""
    tags = failed.dagster_run.tags
    attempt = int(tags.get(ATTEMPT_TAG, "1"))
    first, last = tags["appdata/first_sequence"], tags["appdata/last_sequence"]
    stream, shard_id = tags["appdata/stream"], tags[SHARD_TAG][len(tags["appdata/stream"]) + 1:]
    what = f"{shard_id}: drain of {first}..{last} {failed.dagster_run.status.value.lower()} (run {failed.dagster_run.run_id[:8]}, attempt {attempt})"
    ended_at = failed.end_time or now
    wait = retry_delay(attempt) - (now - ended_at)
    if wait > 0:
        return None, f"{what}; not delivered, next attempt in {wait:.0f}s"
    request = drain_request(stream, shard_id, first, last, tags.get("appdata/records", "?"), attempt + 1)
    return request, f"{what}; not delivered, requesting it again (attempt {attempt + 1})"


def plan_requests(
    kinesis_client, stream: str, cursor: dict, instance: dg.DagsterInstance | None = None, *,
    identity: dict | None = None, max_records: int = MAX_RECORDS_PER_RUN, budget_seconds: float = TICK_BUDGET_SECONDS,
    now: float | None = None,
) -> tuple[list[dg.RunRequest], dict, list[tuple[str, str]]]:
    """One tick's work: (run requests, new cursor, (level, line) to log). Pure over a Kinesis client.

    A shard's position only moves past a range the sensor requested; a range whose run failed
    is requested again before anything after it, so nothing is skipped. With `identity`, a
    stream that is not the one the positions were saved for is said loudly and read anew.
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    notes: list[tuple[str, str]] = []
    positions = dict(cursor["shards"])
    ended = list(cursor["ended"])
    saved = cursor.get("stream")
    if identity is not None and saved is not None and saved != identity:
        notes.append(("error", f"stream {stream} is not the one the drain positions were saved for (was {saved}, "
                               f"now {identity}): it was deleted and re-created, or the emulator lost its state. "
                               "Reading the new stream from its start; what the old one held and was not drained "
                               "is gone."))
        positions, ended = {}, []
    shards = list_shards(kinesis_client, stream)
    known = {s["ShardId"] for s in shards}
    ended_now: set[str] = set()
    requests: list[dg.RunRequest] = []
    runs: dict[str, ShardRuns] = {}

    def of(shard_id: str) -> ShardRuns:
        if shard_id not in runs:
            runs[shard_id] = shard_runs(instance, stream, shard_id)
        return runs[shard_id]

    for shard in shard_order(shards):
        shard_id = shard["ShardId"]
        if time.monotonic() - started > budget_seconds:
            notes.append(("info", f"tick budget spent; {shard_id} and later shards wait for the next tick"))
            break
        state = of(shard_id)
        if state.failed is not None:  # even a shard read to its end: its last range must be delivered
            request, line = retry_failed(state.failed, now)
            notes.append(("warning", line))
            if request is not None:
                requests.append(request)
            continue
        if shard_id in ended or state.busy:
            continue
        parents = [p for p in parents_of(shard) if p in known]  # parents past retention are gone: done
        if any(p not in ended or p in ended_now or of(p).busy or of(p).failed for p in parents):
            continue
        try:
            read = read_shard(kinesis_client, stream, shard_id, after=positions.get(shard_id),
                              max_records=max_records)
        except ClientError as exc:
            if error_code(exc) != "InvalidArgumentException" or shard_id not in positions:
                raise
            notes.append(("error", f"{shard_id}: saved position {positions[shard_id]} is not in the shard ({exc}); "
                                   "reading it again from its oldest record"))
            positions.pop(shard_id)
            read = read_shard(kinesis_client, stream, shard_id, max_records=max_records)
        if read.records:
            first, last = read.records[0]["SequenceNumber"], read.records[-1]["SequenceNumber"]
            requests.append(drain_request(stream, shard_id, first, last, len(read.records)))
            positions[shard_id] = last
            notes.append(("info", f"{shard_id}: {len(read.records)} records {first}..{last}"))
        if read.shard_end:
            ended.append(shard_id)
            ended_now.add(shard_id)
            notes.append(("info", f"{shard_id}: closed and read to its end; children may start after its last run"))
    # forget shards that no longer exist (trimmed after retention)
    positions = {k: v for k, v in positions.items() if k in known}
    ended = [s for s in ended if s in known]
    new_cursor = {"shards": positions, "ended": ended}
    if identity is not None:
        new_cursor["stream"] = identity
    return requests, new_cursor, notes


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
    client = kinesis.get_client()
    requests, new_cursor, notes = plan_requests(client, kinesis.stream_name, cursor, instance,
                                                identity=stream_identity(client, kinesis.stream_name))
    for level, note in notes:
        getattr(context.log, level)(note)
    if not requests and new_cursor == cursor:
        problems = [note for level, note in notes if level != "info"]
        return dg.SensorResult(skip_reason=problems[0] if problems else "no new records",
                               cursor=json.dumps(new_cursor, sort_keys=True))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(new_cursor, sort_keys=True))


def _has_instance(context: dg.SensorEvaluationContext) -> bool:
    try:
        context.instance  # noqa: B018 - raises when the test built no instance
        return True
    except Exception:  # noqa: BLE001
        return False
