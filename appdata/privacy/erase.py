"""A user's rows removed from every copy the pipeline keeps, each place counted.

Where a user's data lives: the lake's Iceberg table (and its older snapshots), the raw archive of
drained ranges, the batch's landing and curated files, the dead letters (replayed ones too), the
Dagster asset values (the simulated clients' datasets), DynamoDB (downloads and
recommendations), the warehouse's download tables and every mart built on them, and the
recommender fitted on them. Objects are rewritten without the user's rows (same key, same
format); the table deletes the rows, then expires every snapshot but the current one and deletes
the files only those snapshots held; the marts and the recommender are rebuilt. Kinesis cannot
delete a record: the user's records expire with the stream's retention (24 h by default), and
the drain drops them meanwhile (`forgotten`). Every step is idempotent: a retried erasure finds
nothing more to remove.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table

from appdata import aws
from appdata.contract import layout
from appdata.lake import maintenance, tables
from appdata.privacy.forgotten import names_one_of

# Every prefix of the bucket whose objects can hold a user's rows, and how each is read.
OBJECT_PREFIXES = (layout.LAKE, layout.LANDING, layout.CURATED, layout.REJECTED, layout.ASSETS)
WAREHOUSE_TABLES = ("downloads_stream", "downloads_batch", "mart_download_facts")


# ---- objects: one reader/rewriter per format, chosen by the key


def _line_holds(line: dict, users: set[int]) -> bool:
    """A JSON line of the raw archive (an event) or a dead letter (its `record`)."""
    record = line.get("record") if isinstance(line.get("record"), dict) else line
    return isinstance(record, dict) and names_one_of(record.get("user_id"), users)


def _without_json_lines(body: bytes, users: set[int]) -> tuple[bytes, int]:
    kept, removed = [], 0
    for raw in body.split(b"\n"):
        if not raw:
            continue
        try:
            holds = _line_holds(json.loads(raw), users)
        except ValueError:
            holds = False
        if holds:
            removed += 1
        else:
            kept.append(raw)
    return b"".join(line + b"\n" for line in kept), removed


def _without_csv_rows(body: bytes, users: set[int]) -> tuple[bytes, int]:
    text = body.decode("utf-8", errors="surrogateescape")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return body, 0
    header = [name.replace("\ufeff", "").strip().lower() for name in rows[0]]  # as the ETL names columns
    if "user_id" not in header:
        return body, 0
    column = header.index("user_id")
    kept = [rows[0]] + [row for row in rows[1:] if not (len(row) > column and names_one_of(row[column], users))]
    removed = len(rows) - len(kept)
    if not removed:
        return body, 0
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(kept)
    return out.getvalue().encode("utf-8", errors="surrogateescape"), removed


def _without_parquet_rows(body: bytes, users: set[int]) -> tuple[bytes, int]:
    table = pq.read_table(pa.BufferReader(body))
    if "user_id" not in table.column_names:
        return body, 0
    column = table.column("user_id")
    try:
        match = pc.is_in(pc.cast(column, pa.int64()), value_set=pa.array(sorted(users), pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        match = pa.array([names_one_of(v, users) for v in column.to_pylist()])
    match = pc.fill_null(match, False)
    removed = pc.sum(match).as_py() or 0
    if not removed:
        return body, 0
    sink = io.BytesIO()
    pq.write_table(table.filter(pc.invert(match)), sink)
    return sink.getvalue(), removed


def rows_without(key: str, body: bytes, users: set[int]) -> tuple[bytes, int]:
    """The object's bytes without the rows of `users`, and how many rows that removed."""
    compressed = body[:2] == b"\x1f\x8b"
    plain = gzip.decompress(body) if compressed else body
    if key.endswith(".parquet"):
        out, removed = _without_parquet_rows(plain, users)
    elif key.endswith((".jsonl", ".jsonl.gz")):
        out, removed = _without_json_lines(plain, users)
    elif key.endswith((".csv", ".csv.gz")):
        out, removed = _without_csv_rows(plain, users)
    else:
        return body, 0
    if not removed:
        return body, 0
    return (gzip.compress(out, mtime=0) if compressed else out), removed


def object_keys(s3: Any, bucket: str) -> Iterable[str]:
    for prefix in OBJECT_PREFIXES:
        yield from aws.list_keys(s3, bucket, prefix)


def erase_objects(s3: Any, bucket: str, user_id: int, keys: Iterable[str]) -> Counter:
    """Rewrite each of `keys` that holds the user's rows; rows removed per area of the bucket."""
    removed: Counter = Counter()
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        out, count = rows_without(key, body, {user_id})
        if count:
            s3.put_object(Bucket=bucket, Key=key, Body=out)
            removed[area_of(key)] += count
    return removed


def area_of(key: str) -> str:
    return next((prefix.rstrip("/") for prefix in OBJECT_PREFIXES if key.startswith(prefix)), key.split("/", 1)[0])


def keys_for_days(s3: Any, bucket: str, days: set[str]) -> list[str]:
    """The objects that can hold the user's events of `days` (the day partitions of the raw
    archive, landing and curated areas), every dead letter and every asset value."""
    keys = []
    for prefix in (layout.LAKE, layout.LANDING, layout.CURATED):
        for day in sorted(days):
            keys += list(aws.list_keys(s3, bucket, layout.partition(prefix, day)))
    for prefix in (layout.REJECTED, layout.ASSETS):
        keys += list(aws.list_keys(s3, bucket, prefix))
    return keys


# ---- the table, DynamoDB, the warehouse


def erase_table(table: Table, s3: Any, user_id: int, *, expire: bool = False) -> tuple[int, int]:
    """Delete the user's rows, then (when there were any, or `expire`) every older snapshot and
    the files only they held; returns (rows deleted, files removed). A user the table never held
    costs no history."""
    table.refresh()
    held = table.scan(row_filter=EqualTo("user_id", user_id), selected_fields=("event_id",)).to_arrow().num_rows
    if held:
        tables.commit(table, lambda table, transaction: transaction.delete(EqualTo("user_id", user_id)))
    return held, len(maintenance.expire_all_but_current(table, s3)) if held or expire else 0


def erase_dynamodb(dynamodb: Any, table: str, user_id: int) -> int:
    """Every item of the user's partition: downloads and recommendations."""
    keys = []
    for page in dynamodb.get_paginator("query").paginate(
            TableName=table, KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": {"S": str(user_id)}},
            ProjectionExpression="user_id, sk"):
        keys += page.get("Items", [])
    for start in range(0, len(keys), 25):
        requests = [{"DeleteRequest": {"Key": key}} for key in keys[start:start + 25]]
        pending = {table: requests}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return len(keys)


def warehouse_days(engine: sa.Engine, user_id: int) -> set[str]:
    days = set()
    with engine.connect() as conn:
        for name in ("downloads_stream", "downloads_batch"):
            if sa.inspect(conn).has_table(name):
                days |= {str(day)[:10] for (day,) in conn.execute(
                    sa.text(f"SELECT DISTINCT download_date FROM {name} WHERE user_id = :u"), {"u": user_id})}
    return days


def erase_warehouse(engine: sa.Engine, user_id: int, rebuild: Callable[[sa.Engine], Any]) -> int:
    """Delete the user's rows from the download tables and the marts that keep user ids, in one
    transaction, then (when there were any) rebuild every mart (`rebuild`) so no aggregate still
    counts them."""
    removed = 0
    with engine.begin() as conn:
        for name in WAREHOUSE_TABLES:
            if sa.inspect(conn).has_table(name):
                removed += conn.execute(sa.text(f"DELETE FROM {name} WHERE user_id = :u"), {"u": user_id}).rowcount or 0
    if removed:
        rebuild(engine)
    return removed
