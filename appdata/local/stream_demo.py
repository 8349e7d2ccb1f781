"""The stream path end to end, for `appdata demo`: send, drain, count, reconcile.

Sends `n_events` distinct events of which `invalid` are broken and `repeated` are posted a
second time (a client retrying), through the ingest API (or straight into Kinesis), drains
every shard with the consumer the drain runs use (or, beside a running `appdata up`, waits for
its consumer runs to deliver), and counts what arrived in each sink. Counts are restricted to this demo's own event ids (fresh per call),
so earlier data in the stores never skews them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import uuid
from typing import Any

from appdata import aws
from appdata.config import Settings
from appdata.contract import layout

DELIVERY_WAIT_SECONDS = 120.0  # for a consumer run that holds a shard to deliver the demo's records
INVALID_KINDS = (
    ("age", None),              # null required field
    ("rating", "excellent"),    # not a number
    ("download_date", "2021-13-45"),  # not a date
    ("type", "Maybe"),          # not Free/Paid
    ("app", ""),                # empty required field
)


def demo_events(settings: Settings, n_events: int, invalid: int, nonce: str) -> tuple[list[dict], set[int]]:
    """`n_events` realistic events (catalogue x stream users, today) with `invalid` broken ones."""
    from appdata.sources.catalogue import clean_catalogue, load_catalogue
    from appdata.sources.users import STREAM_FIRST_ID, STREAM_USERS, downloads_for_day, make_users
    from appdata.stream.client import _json_value

    raw, _ = load_catalogue(settings.playstore_csv, seed=settings.seed)
    apps, _ = clean_catalogue(raw)
    users = make_users(STREAM_USERS, STREAM_FIRST_ID, settings.seed + STREAM_FIRST_ID,
                       sorted(apps["category"].unique()), "stream")
    frame = downloads_for_day(apps, users, dt.datetime.now(dt.timezone.utc).date(), source=f"demo-{nonce}",
                              seed=settings.seed, rows=n_events, mode=settings.preferences)
    events = [{k: _json_value(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    step = max(n_events // max(invalid, 1), 1)
    broken: set[int] = set()
    for number, index in enumerate(range(0, n_events, step)):
        if len(broken) == invalid:
            break
        name, value = INVALID_KINDS[number % len(INVALID_KINDS)]
        events[index][name] = value
        broken.add(index)
    return events, broken


def _put_direct(kinesis: Any, stream: str, events: list[dict]) -> None:
    """What the API does after validation, minus validation: the drain must reject the bad ones."""
    outcome = aws.put_records(kinesis, stream, events, partition_key="user_id")
    if outcome.failed:
        raise RuntimeError(f"Kinesis did not take {len(outcome.failed)} of the demo's records ({outcome.failed[0][1]})")


def lake_event_ids(s3: Any, bucket: str, days: set[str], since: dt.datetime) -> set[str]:
    ids: set[str] = set()
    for day in days:
        for obj in aws.list_objects(s3, bucket, layout.partition(layout.LAKE, day)):
            if obj["LastModified"] < since:
                continue
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            ids.update(json.loads(line)["event_id"] for line in body.decode().splitlines() if line)
    return ids


def dynamodb_event_ids(dynamodb: Any, table: str, events: list[dict]) -> set[str]:
    """Which of these events have their download item (BatchGetItem by exact key, 100 a call)."""
    keys = list({(str(e["user_id"]), f"DL#{e['download_date']}#{e['event_id']}") for e in events})
    ids: set[str] = set()
    for start in range(0, len(keys), 100):
        pending: dict = {table: {"Keys": [{"user_id": {"S": u}, "sk": {"S": sk}} for u, sk in keys[start:start + 100]],
                                 "ProjectionExpression": "sk"}}
        while pending:
            answer = dynamodb.batch_get_item(RequestItems=pending)
            ids.update(item["sk"]["S"].rsplit("#", 1)[-1] for item in answer["Responses"].get(table, []))
            pending = answer.get("UnprocessedKeys") or {}
    return ids


def warehouse_event_ids(engine: Any, ids: list[str]) -> set[str]:
    from appdata.warehouse.loader import distinct_values

    found: set[str] = set()
    for start in range(0, len(ids), 2000):
        found.update(distinct_values(engine, "downloads_stream", "event_id", ids[start:start + 2000]))
    return found


def wait_for_checkpoints(kinesis: Any, leases: Any, shard_ids: list[str], timeout: float = DELIVERY_WAIT_SECONDS) -> None:
    """Until each shard's checkpoint reaches the newest record it holds now (every sink has it)."""
    from appdata.stream.drain import read_shard, seq_int

    for shard_id in shard_ids:
        tail = read_shard(kinesis, leases.stream, shard_id, after=leases.get(shard_id).checkpoint,
                          max_records=10**9).records
        if not tail:
            continue
        newest = seq_int(tail[-1]["SequenceNumber"])
        deadline = time.monotonic() + timeout
        while seq_int(leases.get(shard_id).checkpoint or "0") < newest:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shard_id}: the consumer holding it did not deliver up to {newest} within "
                                   f"{timeout:.0f}s; is the drain stalled? (Dagster UI, stream_drain_job)")
            time.sleep(0.5)


def demo_dead_letters(s3: Any, bucket: str, broken: list[dict]) -> int:
    """How many of the demo's broken records have their stream dead letter (by their event ids,
    fresh for every demo)."""
    from appdata.reliability.deadletters import list_dead_letters

    ours = {record["event_id"] for record in broken}
    return sum(letter.record.get("event_id") in ours for letter in list_dead_letters(s3, bucket, source="stream"))


def run_stream_demo(
    settings: Settings | None = None, *, n_events: int = 5_000, invalid: int = 200, repeated: int = 500,
    via_api: bool = True, api_url: str | None = None, progress: bool = False,
) -> dict:
    """Send, drain and count; `reconciled` says every sink holds exactly the accepted events.

    via_api: POST to the ingest API at `api_url` (default settings.api_url, started by the
    caller); otherwise records go straight into Kinesis and the drain does the rejecting.
    """
    from appdata.defs.resources import build_resources
    from appdata.stream.consumer import Sinks, drain_until_caught_up
    from appdata.stream.leases import LeaseTable

    settings = settings or Settings.from_env()
    resources = build_resources(settings)
    kinesis, s3, dynamodb = (resources["kinesis"].get_client(), resources["s3"].get_client(),
                             resources["dynamodb"].get_client())
    nonce = uuid.uuid4().hex[:10]
    events, broken = demo_events(settings, n_events, invalid, nonce)
    good = [e for i, e in enumerate(events) if i not in broken]
    again = good[:repeated]
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=2)
    started = time.monotonic()

    if via_api:
        from appdata.stream.client import api_key, send_records

        url = api_url or settings.api_url
        first = send_records(events, api_url=url, key=api_key(), progress=progress)
        second = send_records(again, api_url=url, key=api_key(), progress=progress)
        accepted, rejected = first.accepted + second.accepted, len(first.rejected) + len(second.rejected)
    else:
        _put_direct(kinesis, resources["kinesis"].stream_name, events + again)
        accepted, rejected = None, None
    sent_seconds = time.monotonic() - started

    stream = resources["kinesis"].stream_name
    leases = LeaseTable(dynamodb, resources["dynamodb"].lease_table_name, stream)
    caught_up = drain_until_caught_up(
        kinesis=kinesis, stream=stream, owner=f"demo-{nonce}", leases=leases,
        sinks=Sinks(s3=s3, bucket=resources["s3"].bucket, dynamodb=dynamodb, table=resources["dynamodb"].table_name,
                    warehouse=resources["warehouse"].connect))
    results = caught_up.results
    if caught_up.held_elsewhere:  # a running consumer (appdata up's daemon) drains those: wait until it has
        wait_for_checkpoints(kinesis, leases, caught_up.held_elsewhere)
    with resources["warehouse"].connect() as engine:
        ours = [e["event_id"] for e in good]
        warehouse = warehouse_event_ids(engine, ours)
    drained_seconds = time.monotonic() - started - sent_seconds

    ours_set = set(ours)
    if not via_api and caught_up.held_elsewhere:  # the drain's verdicts are in its dead letters
        rejected = demo_dead_letters(s3, resources["s3"].bucket, [e for i, e in enumerate(events) if i in broken])
        accepted = len(events) + len(again) - rejected
    elif not via_api:
        accepted = sum(r.valid for r in results)
        rejected = sum(r.rejected for r in results)
    days = {str(e["download_date"]) for e in good}
    lake = lake_event_ids(s3, resources["s3"].bucket, days, since) & ours_set
    dynamo = dynamodb_event_ids(dynamodb, resources["dynamodb"].table_name, good) & ours_set
    expected = len(ours_set)
    touched = set().union(*(r.users for r in results)) if results else set()
    report = {
        "sent": len(events) + len(again),
        "accepted": accepted,
        "rejected": rejected,
        "expected_distinct": expected,
        "lake_distinct_events": len(lake),
        "dynamodb_distinct_events": len(dynamo),
        "warehouse_rows": len(warehouse),
        "drain_ranges": len(results),
        "users_touched": sorted(touched),
        "send_seconds": round(sent_seconds, 1),
        "drain_seconds": round(drained_seconds, 1),
        "via": "api" if via_api else "kinesis",
    }
    report["reconciled"] = (
        len(lake) == len(dynamo) == len(warehouse) == expected
        and rejected == invalid
        and accepted == expected + len(again)
    )
    return report
