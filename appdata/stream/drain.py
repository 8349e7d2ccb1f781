"""The Kinesis drain: one shard's sequence range -> S3 lake, DynamoDB and the warehouse.

Pure logic over boto3 clients and a SQLAlchemy engine, so the sensor's runs, the demo and the
benchmarks all call the same code. Every write is keyed by the range or by the event, so
draining a range a second time rewrites the same lake objects, overwrites the same DynamoDB
items and inserts no warehouse row: replays are safe, duplicates impossible.

Shard reading follows the Kinesis Client Library: a closed shard's NextShardIterator is null
(its end), a child shard is read only after its parents are read to their end, expired
iterators are renewed after the last sequence number seen. Throttling is botocore's to retry
(`appdata.aws`: one retry policy), not this module's.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from botocore.exceptions import ClientError

from appdata import aws
from appdata.aws import error_code
from appdata.contract import deadletters, layout, schema
from appdata.contract.schema import typed_records
from appdata.lake import tables
from appdata.privacy import forgotten
from appdata.warehouse.loader import events_by_id, insert_new

log = logging.getLogger(__name__)

WAREHOUSE_TABLE = "downloads_stream"
GET_RECORDS_LIMIT = 10_000  # Kinesis's own maximum per GetRecords call
PRIVATE_COLUMNS = ["_seq", "_arrival", "_event", "_new"]  # what decoding adds beside the event columns


# --------------------------------------------------------------------------- reading


def seq_int(sequence_number: str) -> int:
    """Kinesis sequence numbers are decimal strings that order numerically, not lexically."""
    return int(sequence_number)


def list_shards(kinesis: Any, stream: str) -> list[dict]:
    """Every shard of the stream (open and closed), following ListShards pagination."""
    shards: list[dict] = []
    response = kinesis.list_shards(StreamName=stream)
    shards.extend(response.get("Shards", []))
    while response.get("NextToken"):
        response = kinesis.list_shards(NextToken=response["NextToken"])
        shards.extend(response.get("Shards", []))
    return shards


def parents_of(shard: dict) -> list[str]:
    return [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]


def shard_order(shards: list[dict]) -> list[dict]:
    """Parents before children (KCL order), ties by shard id."""
    by_id = {s["ShardId"]: s for s in shards}
    ordered: list[dict] = []
    seen: set[str] = set()

    def visit(shard: dict) -> None:
        if shard["ShardId"] in seen:
            return
        seen.add(shard["ShardId"])
        for parent in parents_of(shard):
            if parent in by_id:
                visit(by_id[parent])
        ordered.append(shard)

    for shard in sorted(shards, key=lambda s: s["ShardId"]):
        visit(shard)
    return ordered


def get_iterator(kinesis: Any, stream: str, shard_id: str, *, at: str | None = None, after: str | None = None) -> str:
    """A shard iterator AT or AFTER a sequence number, else from TRIM_HORIZON."""
    kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
    if at is not None:
        kwargs.update(ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=at)
    elif after is not None:
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
    else:
        kwargs.update(ShardIteratorType="TRIM_HORIZON")
    return kinesis.get_shard_iterator(**kwargs)["ShardIterator"]


@dataclass
class ShardRead:
    """Records read from one shard, and whether its end (closed shard) was reached."""

    records: list[dict]
    shard_end: bool = False
    caught_up: bool = False  # no more records available right now
    millis_behind_latest: int | None = None  # of the last GetRecords answer: how far the read end trails the shard's tip


def read_shard(
    kinesis: Any,
    stream: str,
    shard_id: str,
    *,
    at: str | None = None,
    after: str | None = None,
    until: str | None = None,
    max_records: int = GET_RECORDS_LIMIT,
    limit_per_call: int = GET_RECORDS_LIMIT,
    max_empty_calls: int = 3,
) -> ShardRead:
    """Read a shard from a position, up to `until` (inclusive) or `max_records`, whichever first.

    Stops at the shard's end (NextShardIterator null: closed shard), or when caught up
    (MillisBehindLatest 0 with no records, or `max_empty_calls` empty answers in a row).
    ExpiredIteratorException renews the iterator after the last record seen.
    """
    last_seen: str | None = None
    iterator = get_iterator(kinesis, stream, shard_id, at=at, after=after)
    until_int = seq_int(until) if until is not None else None
    records: list[dict] = []
    empty_calls = 0
    behind: int | None = None
    while iterator is not None:
        want = min(limit_per_call, max_records - len(records))
        if want <= 0:
            return ShardRead(records, millis_behind_latest=behind)
        try:
            response = kinesis.get_records(ShardIterator=iterator, Limit=want)
        except ClientError as exc:
            if error_code(exc) != "ExpiredIteratorException":
                raise
            if last_seen is not None:
                iterator = get_iterator(kinesis, stream, shard_id, after=last_seen)
            else:
                iterator = get_iterator(kinesis, stream, shard_id, at=at, after=after)
            continue
        batch = response.get("Records", [])
        behind = response.get("MillisBehindLatest", behind)
        for record in batch:
            if until_int is not None and seq_int(record["SequenceNumber"]) > until_int:
                return ShardRead(records, millis_behind_latest=behind)
            records.append(record)
            last_seen = record["SequenceNumber"]
            if until_int is not None and seq_int(last_seen) == until_int:
                return ShardRead(records, millis_behind_latest=behind)
        iterator = response.get("NextShardIterator")
        if iterator is None:
            return ShardRead(records, shard_end=True, caught_up=True, millis_behind_latest=behind)
        if batch:
            empty_calls = 0
            continue
        empty_calls += 1
        if response.get("MillisBehindLatest", 0) == 0 or empty_calls >= max_empty_calls:
            return ShardRead(records, caught_up=True, millis_behind_latest=behind)
    return ShardRead(records, shard_end=True, caught_up=True, millis_behind_latest=behind)


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    # typed events, with _seq, _arrival, _event (its JSON-safe dict) and _new (the event_id's first
    # record: not stored before, not earlier in the range) beside the event columns
    valid: pd.DataFrame
    rejected: list[dict]  # dead-letter lines


def _arrival(record: dict) -> dt.datetime:
    stamp = record.get("ApproximateArrivalTimestamp")
    if isinstance(stamp, dt.datetime):
        return stamp.astimezone(dt.timezone.utc) if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)
    if isinstance(stamp, (int, float)):
        return dt.datetime.fromtimestamp(stamp, dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc)


def _dead_letter(*, shard_id: str, stream: str, record: dict, raw: Any, field_name: str | None, reason: str,
                 now: str, row: int) -> dict:
    return deadletters.letter("stream", field=field_name, reason=reason, row=row, record=raw, rejected_at=now,
                              stream=stream, shard_id=shard_id, sequence_number=record["SequenceNumber"],
                              partition_key=record.get("PartitionKey"),
                              approximate_arrival=_arrival(record).isoformat())


def decode_records(records: list[dict], *, shard_id: str, stream: str,
                   stored: Callable[[list[str]], Mapping[str, dict]] | None = None) -> Decoded:
    """Kinesis records -> valid typed events and dead letters (undecodable, invalid, conflicting).

    The same contract as the API: `schema.loads`, `schema.prepare_json_records`, then
    `schema.validate_records`; a record a producer wrote straight to Kinesis gets the verdict
    (and the event id) it would have got through POST /v1/downloads. Then `schema.conflicts`
    against the records of the range before it and `stored` (the events the warehouse already
    holds, by id), so every sink keeps the first record of an event_id.
    """
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    rejected: list[dict] = []
    payloads: list[Any] = []
    sources: list[dict] = []  # the Kinesis record of each decoded payload
    for row, record in enumerate(records):
        data = record["Data"]
        try:
            payloads.append(schema.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data))
            sources.append(record)
        except (UnicodeDecodeError, ValueError) as exc:
            if isinstance(data, (bytes, bytearray)) and isinstance(exc, UnicodeDecodeError):
                raw: dict = {"data_base64": base64.b64encode(bytes(data)).decode()}
            else:
                text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else str(data)
                raw = {"data": text[:10_000]}
            rejected.append(_dead_letter(shard_id=shard_id, stream=stream, record=record, raw=raw,
                                         field_name=None, reason=f"undecodable record: {exc}", now=now, row=row))
    positions = {id(source): row for row, source in enumerate(records)}
    candidates, json_rejected = schema.prepare_json_records(payloads)
    for item in json_rejected:
        source = sources[item.position]
        rejected.append(_dead_letter(shard_id=shard_id, stream=stream, record=source, raw=item.record,
                                     field_name=item.field, reason=item.reason, now=now, row=positions[id(source)]))
    if not candidates:
        return Decoded(valid=pd.DataFrame(), rejected=rejected)
    validation = schema.validate_records(schema.records_to_frame(event for _, event in candidates), first_row=0)
    for item in validation.rejected.itertuples(index=False):
        position, event = candidates[int(item.row)]
        source = sources[position]
        rejected.append(_dead_letter(shard_id=shard_id, stream=stream, record=source,
                                     raw={**payloads[position], "event_id": event["event_id"]},
                                     field_name=item.field, reason=item.reason, now=now, row=positions[id(source)]))
    bad_rows = set(int(r) for r in validation.rejected["row"])
    kept = [position for i, (position, _) in enumerate(candidates) if i not in bad_rows]
    valid = validation.valid
    stored_events: Mapping[str, dict] = {}
    if not valid.empty:
        events = typed_records(valid)
        stored_events = stored([e["event_id"] for e in events]) if stored else {}
        conflicting = schema.conflicts(events, stored_events)
        for i, reason in conflicting.items():
            source = sources[kept[i]]
            rejected.append(_dead_letter(shard_id=shard_id, stream=stream, record=source, raw=payloads[kept[i]],
                                         field_name="event_id", reason=reason, now=now, row=positions[id(source)]))
        if conflicting:
            keep = [i not in conflicting for i in range(len(kept))]
            valid = valid[keep].reset_index(drop=True)
            kept = [position for position, ok in zip(kept, keep) if ok]
    kept = [sources[position] for position in kept]
    valid = valid.reset_index(drop=True)
    valid["_event"] = typed_records(valid) if not valid.empty else []
    valid["_seq"] = [r["SequenceNumber"] for r in kept]
    valid["_arrival"] = [_arrival(r) for r in kept]
    first_records, seen = [], set(stored_events)
    for event_id in valid["event_id"]:
        first_records.append(event_id not in seen)
        seen.add(event_id)
    valid["_new"] = first_records
    rejected.sort(key=lambda line: line["row"])
    return Decoded(valid=valid, rejected=rejected)


# --------------------------------------------------------------------------- writing


def _gzip_lines(lines: Iterable[dict]) -> bytes:
    text = "".join(json.dumps(line, separators=(",", ":"), default=str) + "\n" for line in lines)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)  # mtime=0: byte-identical replays


def write_lake(s3: Any, bucket: str, shard_id: str, valid: pd.DataFrame) -> list[str]:
    """One gzip JSON-lines object per (download_date, arrival hour), named from shard and range."""
    if valid.empty:
        return []
    frame = valid.drop_duplicates(subset=["event_id"], keep="first")
    hours = frame["_arrival"].map(lambda t: t.strftime("%H"))
    keys: list[str] = []
    for (day, hour), group in frame.groupby([frame["download_date"].map(str), hours], sort=True):
        seqs = sorted(group["_seq"], key=seq_int)
        key = layout.lake_key(day, hour, shard_id, seqs[0], seqs[-1])
        lines = [{**event, "sequence_number": seq, "arrived_at": arrival.isoformat()}
                 for event, seq, arrival in zip(group["_event"], group["_seq"], group["_arrival"])]
        s3.put_object(Bucket=bucket, Key=key, Body=_gzip_lines(lines), ContentType="application/x-ndjson",
                      ContentEncoding="gzip")
        keys.append(key)
    return keys


def write_rejected(s3: Any, bucket: str, shard_id: str, first_seq: str, last_seq: str, rejected: list[dict]) -> list[str]:
    """Dead letters of one range, filed by download_date, else by the day the record arrived (the
    day it was first rejected: stable across replays, unlike the replay's own date)."""
    return deadletters.write(s3, bucket, "stream", layout.range_name(shard_id, first_seq, last_seq), rejected,
                             lambda line: line["approximate_arrival"][:10])


def table_rows(valid: pd.DataFrame, shard_id: str) -> pa.Table:
    """Rows for the lake's Iceberg table: each event_id's first record only (a repeat, or a record
    of a range drained again, is in the table already), with its shard and sequence number."""
    first = valid[valid["_new"]] if not valid.empty else valid
    if first.empty:
        return tables.ARROW_SCHEMA.empty_table()
    return tables.with_provenance(tables.events_from_frame(first), source=tables.STREAM,
                                  ingested_at=dt.datetime.now(dt.timezone.utc), shard_id=shard_id,
                                  sequence_numbers=first["_seq"].tolist(), arrived_at=first["_arrival"].tolist())


def download_item(event: dict) -> dict:
    """A download item per the table contract: pk user_id (a string), sk DL#<date>#<event_id>, then
    the event's fields (None ones left out), for `aws.batch_write_items`."""
    return {**event, "user_id": str(event["user_id"]), "sk": f"DL#{event['download_date']}#{event['event_id']}"}


@dataclass
class DrainResult:
    """What one range's drain did; `users` feeds the recommendations refresh."""

    stream: str
    shard_id: str
    first_sequence: str
    last_sequence: str
    records: int = 0
    valid: int = 0
    rejected: int = 0
    lake_objects: list[str] = field(default_factory=list)
    rejected_objects: list[str] = field(default_factory=list)
    dynamodb_items: int = 0
    warehouse_inserted: int = 0
    users: set[int] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    forgotten: int = 0  # records of users who asked to be forgotten, dropped (no sink, no dead letter)
    shard_end: bool = False
    table_rows: pa.Table | None = None  # the range's rows for the lake table (`table_rows`)
    newest_arrival: dt.datetime | None = None  # ApproximateArrivalTimestamp of the range's last record
    millis_behind_latest: int | None = None  # how far the range's end trailed the shard's newest record

    def summary(self) -> dict:
        return {
            "stream": self.stream, "shard_id": self.shard_id, "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence, "records": self.records, "valid": self.valid,
            "rejected": self.rejected, "lake_objects": len(self.lake_objects),
            "dynamodb_items": self.dynamodb_items, "warehouse_inserted": self.warehouse_inserted,
            "forgotten_dropped": self.forgotten,
            "users_touched": len(self.users),
        }


def without_forgotten(decoded: Decoded, users: forgotten.ForgottenUsers) -> tuple[pd.DataFrame, list[dict], int]:
    """The range without the events and dead letters of forgotten users: nothing of theirs is
    written anywhere; returns (valid, rejected, records dropped)."""
    valid, rejected = decoded.valid, decoded.rejected
    letter_users = [letter["record"].get("user_id") if isinstance(letter.get("record"), dict) else None
                    for letter in rejected]
    gone = users.among((list(valid["user_id"]) if not valid.empty else []) + letter_users)
    if not gone:
        return valid, rejected, 0
    kept_letters = [letter for letter, user in zip(rejected, letter_users) if not forgotten.names_one_of(user, gone)]
    dropped = len(rejected) - len(kept_letters)
    if not valid.empty:
        keep = ~valid["user_id"].astype("int64").isin(gone)
        dropped += len(valid) - int(keep.sum())
        valid = valid[keep].reset_index(drop=True)
    return valid, kept_letters, dropped


def drain_records(
    records: list[dict], *, stream: str, shard_id: str, first_sequence: str, last_sequence: str,
    s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine | None,
    copy_iam_role: str | None = None,
) -> DrainResult:
    """Write already-read records of one range to the lake, DynamoDB and the warehouse."""
    result = DrainResult(stream, shard_id, first_sequence, last_sequence, records=len(records))
    if records:
        result.newest_arrival = max(_arrival(r) for r in records)
    stored = (lambda ids: events_by_id(engine, WAREHOUSE_TABLE, ids)) if engine is not None else None
    decoded = decode_records(records, shard_id=shard_id, stream=stream, stored=stored)
    valid, rejected, result.forgotten = without_forgotten(decoded, forgotten.ForgottenUsers(s3, bucket))
    if not valid.empty:
        result.lake_objects = write_lake(s3, bucket, shard_id, valid)
        items = {event["event_id"]: download_item(event) for event in valid["_event"]}  # a repeat is one item
        refused = dict(isolate(lambda part: aws.batch_write_items(dynamodb, table, [item for _, item in part]),
                               list(items.items()), _dynamodb_refusal, key=lambda pair: pair[0]))
        if engine is not None and engine.dialect.name == "redshift":
            # Redshift ingests through COPY from S3: the lake objects just written are the source.
            from appdata.warehouse.redshift import copy_insert_new

            result.warehouse_inserted = copy_insert_new(
                engine, WAREHOUSE_TABLE, s3, bucket, result.lake_objects, copy_iam_role,
                manifest_key=layout.stream_manifest_key(shard_id, first_sequence, last_sequence),
            )
        elif engine is not None:
            rows = valid.drop(columns=PRIVATE_COLUMNS)
            rows = rows[~rows["event_id"].isin(refused)]
            inserted: list[int] = []
            by_warehouse = dict(isolate(lambda part: inserted.append(insert_new(engine, WAREHOUSE_TABLE, part)), rows,
                                        _warehouse_refusal, key=lambda part: part["event_id"].iloc[0]))
            result.warehouse_inserted = sum(inserted)
            for event_id in by_warehouse:  # DynamoDB took them: take them back, so the sinks agree
                item = items[event_id]
                dynamodb.delete_item(TableName=table, Key=aws.to_item({"user_id": item["user_id"], "sk": item["sk"]}))
            refused.update(by_warehouse)
        if refused:
            valid, rejected = _dead_letter_refused(valid, refused, records, rejected, shard_id=shard_id, stream=stream)
            rewritten = write_lake(s3, bucket, shard_id, valid)
            for key in sorted(set(result.lake_objects) - set(rewritten)):
                s3.delete_object(Bucket=bucket, Key=key)
            result.lake_objects = rewritten
        result.table_rows = table_rows(valid, shard_id)
        result.dynamodb_items = len(items.keys() - refused.keys())
        result.valid = len(valid)
        result.users = set(int(u) for u in valid["user_id"])
        result.event_ids = set(valid["event_id"])
    result.rejected = len(rejected)
    result.rejected_objects = write_rejected(s3, bucket, shard_id, first_sequence, last_sequence, rejected)
    return result


def isolate(write: Callable[[Any], Any], items: Any, refusal: Callable[[Exception], str | None], *,
            key: Callable[[Any], str]) -> list[tuple[str, str]]:
    """Write `items` (a list or a frame); when the sink refuses them for a reason one record can
    cause (`refusal` names it), find the refused records by halving, write the rest, and return
    (key of each refused record, the sink's reason). Any other error propagates: the range fails
    and is retried, since a sink that is down or throttling refuses every record alike."""
    try:
        write(items)
        return []
    except Exception as exc:  # noqa: BLE001 - `refusal` decides, everything else is re-raised
        reason = refusal(exc)
        if reason is None:
            raise
        if len(items) == 1:
            return [(key(items[0] if isinstance(items, list) else items), reason)]
    half = len(items) // 2
    first = items[:half] if isinstance(items, list) else items.iloc[:half]
    rest = items[half:] if isinstance(items, list) else items.iloc[half:]
    return isolate(write, first, refusal, key=key) + isolate(write, rest, refusal, key=key)


def _dynamodb_refusal(exc: Exception) -> str | None:
    if error_code(exc) == "ValidationException":
        return f"DynamoDB refused the item: {exc.response['Error'].get('Message', '')}"
    if isinstance(exc, aws.ItemError):  # refused before the call, as DynamoDB would
        return f"DynamoDB refused the item: {exc}"
    return None


def _warehouse_refusal(exc: Exception) -> str | None:
    """A row the warehouse refuses for its content: PEP 249's DataError or IntegrityError, raised
    by the driver itself on the bulk paths (COPY, DuckDB's frame insert) or wrapped by SQLAlchemy."""
    driver_error = getattr(exc, "orig", None) or exc
    if {"DataError", "IntegrityError"} & {cls.__name__ for cls in type(driver_error).__mro__}:
        return f"the warehouse refused the row: {str(driver_error).strip().splitlines()[0]}"
    return None


def _dead_letter_refused(valid: pd.DataFrame, refused: dict[str, str], records: list[dict], rejected: list[dict], *,
                         shard_id: str, stream: str) -> tuple[pd.DataFrame, list[dict]]:
    """Move the events a sink refused from `valid` to the range's dead letters, with the sink's reason."""
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    row_of = {record["SequenceNumber"]: row for row, record in enumerate(records)}
    out = valid["event_id"].isin(refused)
    for event_id, sequence in zip(valid.loc[out, "event_id"], valid.loc[out, "_seq"]):
        row = row_of[sequence]
        raw = schema.loads(records[row]["Data"])
        rejected.append(_dead_letter(shard_id=shard_id, stream=stream, record=records[row], raw=raw, field_name="record",
                                     reason=refused[event_id], now=now, row=row))
    rejected.sort(key=lambda line: line["row"])
    return valid[~out].reset_index(drop=True), rejected


def drain_range(
    *, kinesis: Any, stream: str, shard_id: str, first_sequence: str, last_sequence: str,
    s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine | None,
    copy_iam_role: str | None = None,
) -> DrainResult:
    """Re-read exactly first..last (inclusive) of one shard and write the three sinks.

    The same range always yields the same records, hence the same object keys, the same
    DynamoDB keys and the same event ids: running it twice changes nothing.
    """
    read = read_shard(kinesis, stream, shard_id, at=first_sequence, until=last_sequence,
                      max_records=10**9)
    result = drain_records(read.records, stream=stream, shard_id=shard_id, first_sequence=first_sequence,
                           last_sequence=last_sequence, s3=s3, bucket=bucket, dynamodb=dynamodb, table=table,
                           engine=engine, copy_iam_role=copy_iam_role)
    result.shard_end = read.shard_end
    result.millis_behind_latest = read.millis_behind_latest
    return result
