"""The one home of our AWS calls: clients, PutRecords, BatchWriteItem, S3 listing and existence.

One retry policy, in two layers that never stack: every client runs botocore's "standard" retry
mode, which retries a whole call that failed (throttling, 5xx, connection errors) with its own
backoff; the functions here retry only what a call that succeeded reports as not done
(PutRecords' failed entries, BatchWriteItem's UnprocessedItems), with a bounded `Backoff`.

Imports boto3 and botocore only (no Dagster, no pandas): the pipeline's resources, the CLI and
the API in its Lambda zip (which carries the whole `appdata` package) all share it.
"""

from __future__ import annotations

import decimal
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

RETRY_MODE = "standard"
MAX_ATTEMPTS = 5  # botocore's retries of a failed call, after the first try (dagster-aws's default too)
PUT_RECORDS_LIMIT = 500  # entries per PutRecords call
BATCH_WRITE_LIMIT = 25  # items per BatchWriteItem call
# BatchWriteItem calls in flight at once: a call spends most of its time waiting for DynamoDB, so
# a few overlap well (a range of 5,000 items is 200 calls).
BATCH_WRITE_CONCURRENCY = 4
MISSING_CODES = ("NoSuchKey", "404", "NotFound")
NOT_MODIFIED_CODES = ("304", "NotModified")


# --------------------------------------------------------------------------- clients and errors


def client(service: str, *, profile_name: str | None = None, max_attempts: int = MAX_ATTEMPTS, **kwargs: Any) -> Any:
    """A boto3 client with the retry policy above; `kwargs` go to `Session.client` (region_name,
    endpoint_url, use_ssl, verify, credentials)."""
    session = boto3.session.Session(profile_name=profile_name)
    # No client-side parameter validation: our requests are built by this module (items through
    # TypeSerializer) and every service validates them again; botocore's pass over each request
    # cost a sixth of a drain range's time (1.5 s of 8.8 s for 5,000 records).
    config = Config(retries={"max_attempts": max_attempts, "mode": RETRY_MODE}, parameter_validation=False)
    return session.client(service, config=config, **kwargs)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ("" for anything else)."""
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def is_missing(exc: BaseException) -> bool:
    """The object (or key) does not exist: GetObject says NoSuchKey, HeadObject a bare 404."""
    return error_code(exc) in MISSING_CODES


@dataclass
class Backoff:
    """Bounded exponential backoff for partial failures: at most `attempts` calls, waits capped
    at `cap`; `sleep` is injectable so Stubber tests run instantly."""

    base: float = 0.05
    cap: float = 2.0
    attempts: int = 8
    sleep: Callable[[float], None] = time.sleep

    def wait(self, retry: int) -> None:
        """Before the retry numbered `retry` (0 for the first)."""
        self.sleep(min(self.cap, self.base * (2 ** retry)))


# --------------------------------------------------------------------------- Kinesis


@dataclass
class PutOutcome:
    succeeded: list[int] = field(default_factory=list)  # positions in the input list
    failed: list[tuple[int, str]] = field(default_factory=list)  # (position, error code of its last try)


def _json_entry(record: dict[str, Any], partition_key: str) -> dict[str, Any]:
    """A PutRecords entry: the record as compact JSON, partitioned by the value of one of its fields."""
    data = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return {"Data": data, "PartitionKey": str(record[partition_key])}


def put_records(kinesis: Any, stream: str, records: list[dict[str, Any]], *, partition_key: str,
                backoff: Backoff | None = None) -> PutOutcome:
    """PutRecords of JSON records in calls of 500; only the entries a call reports as failed are
    sent again, up to `backoff.attempts` calls per chunk. Says which positions made it and which
    did not; an error of the whole call (after botocore's retries) is raised."""
    backoff = backoff or Backoff()
    entries = [_json_entry(record, partition_key) for record in records]
    outcome = PutOutcome()
    for start in range(0, len(entries), PUT_RECORDS_LIMIT):
        pending = list(range(start, min(start + PUT_RECORDS_LIMIT, len(entries))))
        codes: dict[int, str] = {}
        for attempt in range(backoff.attempts):
            if attempt:
                backoff.wait(attempt - 1)
            response = kinesis.put_records(StreamName=stream, Records=[entries[p] for p in pending])
            still = []
            for position, result in zip(pending, response["Records"], strict=True):
                if result.get("ErrorCode"):
                    still.append(position)
                    codes[position] = result["ErrorCode"]
                else:
                    outcome.succeeded.append(position)
            pending = still
            if not pending:
                break
        outcome.failed.extend((p, codes[p]) for p in pending)
    outcome.succeeded.sort()
    return outcome


# --------------------------------------------------------------------------- DynamoDB

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _numbers_as_decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))  # TypeSerializer refuses floats; repr is the float's exact short text
    if isinstance(value, dict):
        return {k: _numbers_as_decimals(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_decimals(v) for v in value]
    return value


class ItemError(ValueError):
    """A value DynamoDB cannot store (a number beyond its range or precision, an unknown type):
    refused here, before the call, as DynamoDB itself would refuse it."""


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values -> DynamoDB's typed JSON (TypeSerializer; floats as numbers). Attributes
    whose value is None are left out, not stored as NULL. Raises ItemError naming the attribute."""
    item = {}
    for name, value in values.items():
        if value is None:
            continue
        if type(value) is str:  # the common case, as TypeSerializer writes it, at a fraction of its cost
            item[name] = {"S": value}
            continue
        try:
            item[name] = _serializer.serialize(_numbers_as_decimals(value))
        except (TypeError, decimal.DecimalException) as exc:
            raise ItemError(f"{name}: DynamoDB cannot store {str(value)[:100]!r} "
                            f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})") from exc
    return item


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's typed JSON -> plain values (TypeDeserializer; numbers as int or float, sets as sorted lists)."""
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def batch_write_items(dynamodb: Any, table: str, items: list[dict[str, Any]], *,
                      backoff: Backoff | None = None, concurrency: int = BATCH_WRITE_CONCURRENCY) -> int:
    """Put plain-valued items (`to_item`) with BatchWriteItem, 25 a call, up to `concurrency` calls
    at once; UnprocessedItems (what DynamoDB throttled) are sent again with backoff, up to
    `backoff.attempts` calls per batch, then RuntimeError. Keys must be distinct (DynamoDB refuses
    a batch naming one key twice). An item it cannot store is refused: ItemError before any call,
    ValidationException from DynamoDB; those and any error left after botocore's retries are
    raised (once every call in flight has ended). Returns the items written."""
    backoff = backoff or Backoff()
    batches = [[{"PutRequest": {"Item": to_item(item)}} for item in items[start:start + BATCH_WRITE_LIMIT]]
               for start in range(0, len(items), BATCH_WRITE_LIMIT)]

    def write(requests: list[dict]) -> None:
        pending = {table: requests}
        for attempt in range(backoff.attempts):
            if attempt:
                backoff.wait(attempt - 1)
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                return
        left = sum(len(requests) for requests in pending.values())
        raise RuntimeError(f"DynamoDB left {left} items unprocessed in {table} after {backoff.attempts} attempts")

    if len(batches) <= 1 or concurrency <= 1:
        for requests in batches:
            write(requests)
        return len(items)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="batch-write") as pool:
        for future in [pool.submit(write, requests) for requests in batches]:
            future.result()
    return len(items)


def scan_items(dynamodb: Any, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item a Scan returns (its pages followed), typed as DynamoDB sends them; `kwargs` as for Scan."""
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, **kwargs):
        yield from page.get("Items", [])


# --------------------------------------------------------------------------- S3


def list_objects(s3: Any, bucket: str, prefix: str = "", *, start_after: str | None = None) -> Iterator[dict]:
    """Every object under `prefix` (ListObjectsV2 pages followed), in key order; stop early by breaking."""
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if start_after is not None:
        kwargs["StartAfter"] = start_after
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        yield from page.get("Contents", [])


def list_keys(s3: Any, bucket: str, prefix: str = "", *, start_after: str | None = None) -> Iterator[str]:
    """The keys of `list_objects`, in key order."""
    return (obj["Key"] for obj in list_objects(s3, bucket, prefix, start_after=start_after))


def list_prefixes(s3: Any, bucket: str, prefix: str, delimiter: str = "/") -> Iterator[str]:
    """The "folders" right under `prefix`: each common prefix up to the next `delimiter`."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter=delimiter)
    for page in pages:
        for common in page.get("CommonPrefixes", []):
            yield common["Prefix"]


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    """HeadObject: True if the object is there, False if not; any other error is raised."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if is_missing(exc):
            return False
        raise


def get_object_if_changed(s3: Any, bucket: str, key: str, etag: str | None) -> dict | None:
    """GetObject, or None when the object still has `etag` (S3 answers 304 and sends no body), so
    a reader holding a copy pays one request, not a download. A missing object raises as GetObject does."""
    try:
        return s3.get_object(Bucket=bucket, Key=key, **({"IfNoneMatch": etag} if etag else {}))
    except ClientError as exc:
        if etag and error_code(exc) in NOT_MODIFIED_CODES:
            return None
        raise
