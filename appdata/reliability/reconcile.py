"""Reconciliation: for one day, which event ids each sink is missing, has in excess or twice.

Counts can agree while the events differ (one lost, another doubled), so every comparison is by
event id. Stream: events accepted by the API (when the caller kept the ids the API returned)
= distinct events in the lake = DynamoDB download items = `downloads_stream`. Batch: the
day's landing rows = curated rows + rejected rows, and curated = `downloads_batch`.
The same functions serve the Dagster asset checks, `appdata demo` and the reliability tests.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd
import sqlalchemy as sa

from appdata import schema

LAKE_PREFIX = "lake/stream"
LANDING_PREFIX = "landing/batch"
CURATED_PREFIX = "curated/batch"
REJECTED_BATCH_PREFIX = "rejected/batch"
SHOWN_IDS = 20  # ids named in a description; metadata carries up to MAX_IDS
MAX_IDS = 1000


@dataclass
class SinkDiff:
    """One sink compared with its reference set of event ids."""

    sink: str
    reference: str
    count: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated)

    def describe(self) -> str:
        if self.ok:
            return f"{self.sink}: {self.count} events = {self.reference}"
        parts = []
        for label, ids in (("missing", self.missing), ("extra", self.extra), ("duplicated", self.duplicated)):
            if ids:
                shown = ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")
                parts.append(f"{len(ids)} {label} vs {self.reference}: {shown}")
        return f"{self.sink}: " + "; ".join(parts)


@dataclass
class DayReconciliation:
    pipeline: str  # "stream" or "batch"
    day: str
    counts: dict[str, int]
    diffs: list[SinkDiff]

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs)

    @property
    def failing(self) -> list[SinkDiff]:
        return [d for d in self.diffs if not d.ok]

    def describe(self) -> str:
        head = f"{self.pipeline} {self.day}: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if self.ok:
            return head + ": reconciled"
        return head + ": NOT reconciled: " + " | ".join(d.describe() for d in self.failing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "day": self.day,
            "ok": self.ok,
            "counts": self.counts,
            "sinks": {
                d.sink: {"reference": d.reference, "count": d.count, "missing": d.missing[:MAX_IDS],
                         "extra": d.extra[:MAX_IDS], "duplicated": d.duplicated[:MAX_IDS]}
                for d in self.diffs
            },
        }


def compare(sink: str, reference_name: str, reference: set[str], found: Counter) -> SinkDiff:
    ids = set(found)
    return SinkDiff(
        sink=sink,
        reference=reference_name,
        count=len(ids),
        missing=sorted(reference - ids),
        extra=sorted(ids - reference),
        duplicated=sorted(i for i, n in found.items() if n > 1),
    )


# ----------------------------------------------------------------- readers (one per sink)


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def _body(s3: Any, bucket: str, key: str) -> bytes:
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def lake_event_ids(s3: Any, bucket: str, day: str) -> Counter:
    """event_id -> copies in the lake objects of `day` (replays rewrite, so copies stay 1 per range)."""
    found: Counter = Counter()
    for key in _keys(s3, bucket, f"{LAKE_PREFIX}/download_date={day}/"):
        for line in _body(s3, bucket, key).decode("utf-8").splitlines():
            if line.strip():
                found[json.loads(line)["event_id"]] += 1
    return found


def dynamodb_event_ids(dynamodb: Any, table: str, day: str) -> Counter:
    """event_id -> items among the day's download items (sk DL#<day>#<event_id>)."""
    found: Counter = Counter()
    prefix = f"DL#{day}#"
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(sk, :p)",
        "ExpressionAttributeValues": {":p": {"S": prefix}},
        "ProjectionExpression": "sk",
    }
    while True:
        page = dynamodb.scan(**kwargs)
        for item in page.get("Items", []):
            found[item["sk"]["S"][len(prefix):]] += 1
        if not page.get("LastEvaluatedKey"):
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def dynamodb_event_ids_by_day(dynamodb: Any, table: str) -> dict[str, Counter]:
    """One scan of every download item, grouped by day (cheaper than a scan per day)."""
    by_day: dict[str, Counter] = {}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(sk, :p)",
        "ExpressionAttributeValues": {":p": {"S": "DL#"}},
        "ProjectionExpression": "sk",
    }
    while True:
        page = dynamodb.scan(**kwargs)
        for item in page.get("Items", []):
            _, day, event_id = item["sk"]["S"].split("#", 2)
            by_day.setdefault(day, Counter())[event_id] += 1
        if not page.get("LastEvaluatedKey"):
            return by_day
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def partition_days_under(s3: Any, bucket: str, prefix: str) -> set[str]:
    """Days that have objects under <prefix>/download_date=YYYY-MM-DD/."""
    days = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/download_date=",
                                                              Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            days.add(common["Prefix"].rstrip("/").split("download_date=", 1)[1])
    return days


def warehouse_days(engine: sa.Engine, table: str) -> set[str]:
    sql = sa.text(f'SELECT DISTINCT download_date FROM "{table}"')
    with engine.connect() as conn:
        return {str(r[0])[:10] for r in conn.execute(sql).fetchall()}


def warehouse_event_ids(engine: sa.Engine, table: str, day: str) -> Counter:
    """event_id -> rows of `table` for the day (more than 1 is a duplicate)."""
    sql = sa.text(f'SELECT event_id, COUNT(*) FROM "{table}" WHERE download_date = :day GROUP BY event_id')
    import datetime as dt

    with engine.connect() as conn:
        rows = conn.execute(sql, {"day": dt.date.fromisoformat(day)}).fetchall()
    return Counter({str(r[0]): int(r[1]) for r in rows})


def _record_id(record: dict[str, Any]) -> str:
    value = record.get("event_id")
    if schema._is_null(value):
        return schema.derive_event_id(record)
    return str(value).strip()


def landing_csv_records(data: bytes) -> list[dict[str, Any]]:
    """Every data row of a landing CSV as a {header name: value} dict, structurally.

    Independent of the ETL's parser on purpose: rows of the wrong width (shifted, truncated)
    and rows with bytes that are not UTF-8 count as rows too, since the ETL must account for
    each of them (curated or rejected). A file without any line has no rows.
    """
    import csv

    text = io.StringIO(data.decode("utf-8-sig", errors="surrogateescape"), newline="")
    reader = csv.reader(text, strict=False)
    header = next(reader, None)
    if not header:
        return []
    names = [h.replace("\ufeff", "").strip().lower() for h in header]
    rows = []
    for fields in reader:
        if not fields:
            continue
        rows.append({n: f.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                     for n, f in zip(names, fields)})
    return rows


def landing_event_ids(s3: Any, bucket: str, day: str) -> Counter:
    """event_id -> rows in every CSV under the day's landing prefix (the client's drop and replays)."""
    found: Counter = Counter()
    for key in _keys(s3, bucket, f"{LANDING_PREFIX}/download_date={day}/"):
        if key.endswith(".csv"):
            for record in landing_csv_records(_body(s3, bucket, key)):
                found[_record_id(record)] += 1
    return found


def curated_event_ids(s3: Any, bucket: str, day: str) -> Counter:
    found: Counter = Counter()
    for key in _keys(s3, bucket, f"{CURATED_PREFIX}/download_date={day}/"):
        if key.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(_body(s3, bucket, key)), columns=["event_id"])
            found.update(str(v) for v in frame["event_id"])
    return found


def rejected_event_ids_by_landing_day(s3: Any, bucket: str, prefix: str = REJECTED_BATCH_PREFIX) -> dict[str, Counter]:
    """Batch dead letters grouped by the landing day they came from (one listing for all days).

    A dead letter is filed under its record's download_date when that parses, which may not be
    the landing file's day; its `landing_day` says where it came from (else the folder's day).
    """
    from appdata.reliability.deadletters import parse_dead_letters

    by_day: dict[str, Counter] = {}
    for key in _keys(s3, bucket, f"{prefix}/"):
        if key.endswith(".jsonl") and "/download_date=" in key:
            for letter in parse_dead_letters(key, _body(s3, bucket, key)):
                day = str(letter.context.get("landing_day") or letter.date)
                by_day.setdefault(day, Counter())[_record_id(letter.record)] += 1
    return by_day


# ----------------------------------------------------------------- reconciliations


def reconcile_stream_day(
    *, s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine, day: str,
    accepted: Iterable[str] | None = None, dynamodb_ids: Counter | None = None,
) -> DayReconciliation:
    """Lake = DynamoDB = downloads_stream (= the API's accepted ids, when given) for `day`.

    Without the accepted ids the reference is the union of the three sinks, so an event present
    anywhere and absent from one sink is named as missing there.
    """
    lake = lake_event_ids(s3, bucket, day)
    items = dynamodb_ids if dynamodb_ids is not None else dynamodb_event_ids(dynamodb, table, day)
    rows = warehouse_event_ids(engine, "downloads_stream", day)
    if accepted is not None:
        reference, name = set(accepted), "accepted by the API"
    else:
        reference, name = set(lake) | set(items) | set(rows), "any stream sink"
    counts = {"lake": len(lake), "dynamodb": len(items), "downloads_stream": sum(rows.values())}
    if accepted is not None:
        counts = {"accepted": len(reference), **counts}
    lake_diff = compare("lake", name, reference, Counter(set(lake)))  # the lake keeps distinct events
    return DayReconciliation("stream", day, counts, [
        lake_diff,
        compare("dynamodb", name, reference, items),
        compare("downloads_stream", name, reference, rows),
    ])


def reconcile_stream(
    *, s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine, days: Iterable[str] | None = None,
) -> list[DayReconciliation]:
    """Every day any stream sink holds (or the given days), with one DynamoDB scan in all."""
    by_day = dynamodb_event_ids_by_day(dynamodb, table)
    if days is None:
        days = partition_days_under(s3, bucket, LAKE_PREFIX) | set(by_day) | warehouse_days(engine, "downloads_stream")
    return [
        reconcile_stream_day(s3=s3, bucket=bucket, dynamodb=dynamodb, table=table, engine=engine, day=day,
                             dynamodb_ids=by_day.get(day, Counter()))
        for day in sorted(days)
    ]


def batch_rejected_by_landing_day(s3: Any, bucket: str) -> dict[str, Counter]:
    """Dead letters still waiting plus those already replayed (moved to rejected/_replayed/).

    A replayed row stays in the client's landing file, so it stays accounted for as rejected;
    when the day is re-run its dead letter is written again, hence max() and not a sum.
    """
    waiting = rejected_event_ids_by_landing_day(s3, bucket)
    replayed = rejected_event_ids_by_landing_day(s3, bucket, prefix="rejected/_replayed/batch")
    for day, ids in replayed.items():
        merged = waiting.setdefault(day, Counter())
        for event_id, n in ids.items():
            merged[event_id] = max(merged[event_id], n)
    return waiting


def batch_days(s3: Any, bucket: str, engine: sa.Engine) -> set[str]:
    return partition_days_under(s3, bucket, LANDING_PREFIX) | warehouse_days(engine, "downloads_batch")


def reconcile_batch_day(
    *, s3: Any, bucket: str, engine: sa.Engine, day: str, rejected_by_day: dict[str, Counter] | None = None,
) -> DayReconciliation:
    """Landing rows = curated + rejected rows, and curated = downloads_batch, by event id."""
    if rejected_by_day is None:
        rejected_by_day = batch_rejected_by_landing_day(s3, bucket)
    landing = landing_event_ids(s3, bucket, day)
    curated = curated_event_ids(s3, bucket, day)
    rows = warehouse_event_ids(engine, "downloads_batch", day)
    return _batch_day(day, landing, curated, rejected_by_day.get(day, Counter()), rows)


def _batch_day(day: str, landing: Counter, curated: Counter, rejected: Counter, rows: Counter) -> DayReconciliation:
    etl_out = curated + rejected
    counts = {
        "landing": sum(landing.values()),
        "curated": sum(curated.values()),
        "rejected": sum(rejected.values()),
        "downloads_batch": sum(rows.values()),
    }
    etl = compare("curated+rejected", "landing", set(landing), etl_out)
    # A landing row repeated by the client is the client's duplicate, not the ETL's.
    etl.duplicated = sorted(i for i in etl.duplicated if etl_out[i] > landing.get(i, 0))
    return DayReconciliation("batch", day, counts, [
        etl,
        compare("downloads_batch", "curated", set(curated), rows),
    ])


def _keys_by_day(s3: Any, bucket: str, prefix: str, first: str, last: str, suffix: str) -> dict[str, list[str]]:
    """Keys ending in `suffix` under <prefix>/download_date=D/ for first <= D <= last: one listing."""
    found: dict[str, list[str]] = {}
    start = f"{prefix}/download_date="
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start, StartAfter=f"{start}{first}")
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"]
            day = key[len(start):].split("/", 1)[0]
            if day > last:
                return found
            if day >= first and key.endswith(suffix):
                found.setdefault(day, []).append(key)
    return found


def warehouse_event_ids_by_day(engine: sa.Engine, table: str, first: str, last: str) -> dict[str, Counter]:
    """event_id -> rows of `table` per day for first <= day <= last, in one query."""
    import datetime as dt

    sql = sa.text(f'SELECT download_date, event_id, COUNT(*) FROM "{table}" '
                  "WHERE download_date >= :first AND download_date <= :last GROUP BY download_date, event_id")
    by_day: dict[str, Counter] = {}
    with engine.connect() as conn:
        result = conn.execute(sql, {"first": dt.date.fromisoformat(first), "last": dt.date.fromisoformat(last)})
        for day, event_id, n in result:
            by_day.setdefault(str(day)[:10], Counter())[str(event_id)] = int(n)
    return by_day


def reconcile_batch(
    *, s3: Any, bucket: str, engine: sa.Engine, days: Iterable[str] | None = None,
) -> list[DayReconciliation]:
    """The given days (default: every day with landing data or warehouse rows).

    Same comparison as `reconcile_batch_day`, read in bulk for a window (a year's backfill checks
    366 days): one listing per prefix, one warehouse query, object bodies fetched on a few threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    rejected_by_day = batch_rejected_by_landing_day(s3, bucket)
    if days is None:
        days = batch_days(s3, bucket, engine)
    days = sorted(days)
    if not days:
        return []
    first, last = days[0], days[-1]
    landing_keys = _keys_by_day(s3, bucket, LANDING_PREFIX, first, last, ".csv")
    curated_keys = _keys_by_day(s3, bucket, CURATED_PREFIX, first, last, ".parquet")
    rows_by_day = warehouse_event_ids_by_day(engine, "downloads_batch", first, last)

    def read_day(day: str) -> tuple[Counter, Counter]:
        landing: Counter = Counter()
        for key in sorted(landing_keys.get(day, [])):
            for record in landing_csv_records(_body(s3, bucket, key)):
                landing[_record_id(record)] += 1
        curated: Counter = Counter()
        for key in sorted(curated_keys.get(day, [])):
            frame = pd.read_parquet(io.BytesIO(_body(s3, bucket, key)), columns=["event_id"])
            curated.update(str(v) for v in frame["event_id"])
        return landing, curated

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="reconcile") as pool:
        read = list(pool.map(read_day, days))
    return [_batch_day(day, landing, curated, rejected_by_day.get(day, Counter()), rows_by_day.get(day, Counter()))
            for day, (landing, curated) in zip(days, read)]


@dataclass
class ClientDelivery:
    """The stream client's accepted events against `downloads_stream`: every event accepted at
    least `grace` seconds ago must be there (younger ones may still be on their way)."""

    accepted: int
    due: int
    delivered: int
    missing: list[str]
    pending: int
    grace_seconds: float

    @property
    def ok(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        if not self.accepted:
            return "the stream client has had nothing accepted yet"
        if self.ok:
            return (f"{self.delivered:,} of {self.due:,} client events accepted over {self.grace_seconds:.0f} s ago "
                    f"are in downloads_stream ({self.pending:,} younger still on their way)")
        return (f"{len(self.missing):,} of {self.due:,} client events accepted over {self.grace_seconds:.0f} s ago "
                f"are NOT in downloads_stream: the drain is stalled or dropped them; e.g. "
                f"{', '.join(self.missing[:SHOWN_IDS])}")


def client_delivery(entries: Iterable[tuple[float, list[str]]], engine: sa.Engine, *, now: float,
                    grace_seconds: float, table: str = "downloads_stream", chunk: int = 5000) -> ClientDelivery:
    """Compare the client's ledger entries (accepted at, event ids) with the warehouse table."""
    from appdata.warehouse.loader import distinct_values

    due: list[str] = []
    pending = accepted = 0
    for at, ids in entries:
        accepted += len(ids)
        if now - at >= grace_seconds:
            due.extend(ids)
        else:
            pending += len(ids)
    due = list(dict.fromkeys(due))
    present: set[str] = set()
    for start in range(0, len(due), chunk):
        present.update(distinct_values(engine, table, "event_id", due[start:start + chunk]))
    missing = [event_id for event_id in due if event_id not in present]
    return ClientDelivery(accepted=accepted, due=len(due), delivered=len(due) - len(missing), missing=missing,
                          pending=pending, grace_seconds=grace_seconds)
