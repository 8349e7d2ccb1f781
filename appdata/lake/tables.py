"""The download events as one Apache Iceberg table: stream and batch, each accepted event once.

`<namespace>.downloads` has the contract's columns (generated from `schema.FIELDS`, so the
contract stays the one home of the event's shape) plus where each row came from, and is
partitioned by download_date and source: "last week, stream and batch" is one scan that opens
only those partitions, from pandas, DuckDB, Spark, Trino or Athena alike.

Writers, each atomic (one Iceberg commit):
- the stream appends drained ranges; the commit also records, in the table's properties, the
  last Kinesis sequence number it holds per shard, so a range committed twice (a retry, a
  re-drain after a crash) adds only what is past that mark: exactly once;
- the batch replaces the (download_date, batch) partitions of its window by filter;
- maintenance rewrites a partition's small files into few large ones, expires old snapshots
  and removes files no snapshot references.
pyiceberg's own commit retry is off on this table: it would re-apply a stream append after a
concurrent commit without re-reading the marks. `commit` retries by running the change again on
the refreshed table instead.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitFailedException, NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, In, LessThan
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, DoubleType, LongType, NestedField, StringType, TimestamptzType
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from appdata.contract import layout
from appdata.contract.schema import EVENT_COLUMNS, FIELDS

TABLE_NAME = "downloads"
STREAM, BATCH = "stream", "batch"
_ICEBERG_TYPES = {"str": StringType, "enum": StringType, "int": LongType, "float": DoubleType, "date": DateType}
# Beside the event: which door it came through, and for stream rows the Kinesis record it was.
PROVENANCE = (
    ("source", StringType, True, "stream or batch"),
    ("shard_id", StringType, False, "Kinesis shard of a stream row"),
    ("sequence_number", StringType, False, "Kinesis sequence number of a stream row"),
    ("arrived_at", TimestamptzType, False, "Kinesis arrival time of a stream row"),
    ("ingested_at", TimestamptzType, True, "When the drain or the batch load wrote the row"),
)
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",  # `commit` retries, re-reading the stream marks (module doc)
    # The stream commits every minute: merge manifests so a snapshot's manifest list stays short.
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    "write.target-file-size-bytes": str(128 << 20),
}
COMMIT_ATTEMPTS = 8
_MARK = "appdata.kinesis."  # table property <_MARK><stream>/<shard_id> = last committed sequence number


def table_schema() -> Schema:
    columns = [(f.name, _ICEBERG_TYPES[f.kind], f.required, f.description) for f in FIELDS] + list(PROVENANCE)
    return Schema(*(NestedField(i, name, kind(), required=required, doc=doc)
                    for i, (name, kind, required, doc) in enumerate(columns, start=1)))


SCHEMA = table_schema()
ARROW_SCHEMA = SCHEMA.as_arrow()
PARTITION_SPEC = PartitionSpec(
    PartitionField(SCHEMA.find_field("download_date").field_id, 1000, IdentityTransform(), "download_date"),
    PartitionField(SCHEMA.find_field("source").field_id, 1001, IdentityTransform(), "source"),
)


@dataclass(frozen=True)
class CatalogConfig:
    """Where the table's metadata lives: `uri` is `glue` (AWS Glue Data Catalog) or a SQLAlchemy
    URL of a SQL catalog (sqlite:///file locally, postgresql://... shared); data and metadata
    files go under `warehouse` (s3://<bucket>/<layout.TABLES>); `io` holds pyiceberg's S3
    settings (endpoint, region, keys) when they are not boto's defaults."""

    uri: str
    warehouse: str
    namespace: str = "appdata"
    io: dict[str, str] = field(default_factory=dict)

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{TABLE_NAME}"

    def catalog(self) -> Catalog:
        if self.uri == "glue":
            return load_catalog("appdata", type="glue", warehouse=self.warehouse, **self.io)
        if self.uri.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return load_catalog("appdata", type="sql", uri=self.uri, warehouse=self.warehouse, **self.io)


def catalog_config(catalog: str, bucket: str, *, namespace: str = "appdata", region_name: str | None = None,
                   endpoint_url: str | None = None, aws_access_key_id: str | None = None,
                   aws_secret_access_key: str | None = None, glue_endpoint_url: str | None = None) -> CatalogConfig:
    """The catalog and S3 settings pyiceberg takes, from the names boto3 uses (one mapping)."""
    io = {"s3.region": region_name, "s3.endpoint": endpoint_url,
          "s3.access-key-id": aws_access_key_id, "s3.secret-access-key": aws_secret_access_key}
    if catalog == "glue":
        io.update({"glue.region": region_name, "glue.endpoint": glue_endpoint_url,
                   "glue.access-key-id": aws_access_key_id, "glue.secret-access-key": aws_secret_access_key})
    return CatalogConfig(uri=catalog, warehouse=layout.tables_warehouse(bucket), namespace=namespace,
                         io={key: value for key, value in io.items() if value})


def open_table(config: CatalogConfig) -> Table:
    """The downloads table, created (with its namespace) when missing."""
    catalog = config.catalog()
    try:
        return catalog.load_table(config.identifier)
    except NoSuchTableError:
        pass
    try:
        catalog.create_namespace(config.namespace)
    except NamespaceAlreadyExistsError:
        pass
    return catalog.create_table_if_not_exists(config.identifier, SCHEMA, partition_spec=PARTITION_SPEC,
                                              properties=TABLE_PROPERTIES)


def commit(table: Table, change: Callable[[Table, Transaction], Any]) -> Any:
    """Apply `change(table, transaction)` in one commit; when another writer committed first,
    refresh and run `change` again on what is there now. Returns what `change` returned."""
    for attempt in Retrying(retry=retry_if_exception_type(CommitFailedException), stop=stop_after_attempt(COMMIT_ATTEMPTS),
                            wait=wait_random_exponential(multiplier=0.05, max=2.0), reraise=True):
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                table.refresh()
            with table.transaction() as transaction:
                outcome = change(table, transaction)
    return outcome


# ---- rows


EVENT_ARROW_SCHEMA = pa.schema([ARROW_SCHEMA.field(name) for name in EVENT_COLUMNS])


def events_from_frame(frame: Any) -> pa.Table:
    """Typed events (a frame from `schema.validate_records`) as Arrow with the table's types."""
    return pa.Table.from_pandas(frame[list(EVENT_COLUMNS)], schema=EVENT_ARROW_SCHEMA, preserve_index=False)


def with_provenance(events: pa.Table, *, source: str, ingested_at: dt.datetime, shard_id: str | None = None,
                    sequence_numbers: Iterable[str] | None = None,
                    arrived_at: Iterable[dt.datetime] | None = None) -> pa.Table:
    """Contract-typed events (the curated Parquet's columns) as rows of the table."""
    n = events.num_rows
    columns = {name: events.column(name) for name in ARROW_SCHEMA.names if name in events.column_names}
    columns["source"] = pa.array([source] * n, pa.string())
    columns["shard_id"] = pa.array([shard_id] * n, pa.string())
    columns["sequence_number"] = pa.array(list(sequence_numbers) if sequence_numbers is not None else [None] * n,
                                          pa.string())
    columns["arrived_at"] = pa.array(list(arrived_at) if arrived_at is not None else [None] * n,
                                     pa.timestamp("us", tz="UTC"))
    columns["ingested_at"] = pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC"))
    return pa.table([columns[name].cast(ARROW_SCHEMA.field(name).type) for name in ARROW_SCHEMA.names],
                    schema=ARROW_SCHEMA)


# ---- stream: exactly once


def _mark(stream: str, shard_id: str) -> str:
    return f"{_MARK}{stream}/{shard_id}"


def stream_marks(table: Table, stream: str) -> dict[str, str]:
    """Shard id -> the last sequence number of that shard the table holds."""
    prefix = f"{_MARK}{stream}/"
    return {key[len(prefix):]: value for key, value in table.properties.items() if key.startswith(prefix)}


@dataclass
class StreamBatch:
    """Rows of one shard drained up to `last_sequence` (inclusive), in sequence order."""

    shard_id: str
    last_sequence: str
    rows: pa.Table


def append_stream(table: Table, stream: str, batches: list[StreamBatch]) -> int:
    """Append the batches and move each shard's mark, in one commit; rows at or below a shard's
    mark are already in the table and are left out. Returns the rows appended."""

    def change(table: Table, transaction: Transaction) -> int:
        marks = stream_marks(table, stream)
        new_rows, new_marks = [], {}
        for batch in batches:
            mark = int(marks.get(batch.shard_id, -1))
            if int(batch.last_sequence) <= mark:
                continue
            rows = batch.rows
            if mark >= 0 and rows.num_rows:  # sequence numbers: decimal strings of up to 56 digits
                rows = rows.filter(pa.array([int(s) > mark for s in rows.column("sequence_number").to_pylist()]))
            new_rows.append(rows)
            new_marks[_mark(stream, batch.shard_id)] = batch.last_sequence
        appended = sum(rows.num_rows for rows in new_rows)
        if appended:
            transaction.append(pa.concat_tables(new_rows))
        if new_marks:
            transaction.set_properties(new_marks)
        return appended

    return commit(table, change)


# ---- batch: a window of days replaced


def batch_days_filter(days: list[dt.date]) -> BooleanExpression:
    return And(EqualTo("source", BATCH), In("download_date", [d.isoformat() for d in days]))


def replace_batch_days(table: Table, days: list[dt.date], rows: pa.Table) -> int:
    """The batch rows of `days` become exactly `rows` (all of them batch rows of those days)."""

    def change(table: Table, transaction: Transaction) -> int:
        with warnings.catch_warnings():  # a first load of a day deletes nothing: not worth a warning
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            transaction.overwrite(rows, overwrite_filter=batch_days_filter(days))
        return rows.num_rows

    return commit(table, change)


# ---- reading


def scan(table: Table, *, start: dt.date | None = None, end: dt.date | None = None,
         days: list[dt.date] | None = None, source: str | None = None, columns: tuple[str, ...] = ("*",)) -> pa.Table:
    """Rows with start <= download_date < end (either open) or of `days`, of one source or both."""
    condition: BooleanExpression = AlwaysTrue()
    if start is not None:
        condition = And(condition, GreaterThanOrEqual("download_date", start.isoformat()))
    if end is not None:
        condition = And(condition, LessThan("download_date", end.isoformat()))
    if days is not None:
        condition = And(condition, In("download_date", [str(day) for day in days]))
    if source is not None:
        condition = And(condition, EqualTo("source", source))
    return table.scan(row_filter=condition, selected_fields=columns).to_arrow()
