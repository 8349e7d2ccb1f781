"""The same table through each catalog the configuration offers: SQLite (local default),
PostgreSQL (shared) and AWS Glue (production; the emulator serves Glue's API): created once,
stream commits exactly once against a stale second writer, batch days replaced."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from appdata.contract import schema
from appdata.lake import tables
from appdata_tests.support.events import make_event

pytestmark = pytest.mark.emulator


def rows(source: str, count: int) -> "tables.pa.Table":
    records = [make_event(n, day="2020-02-0%d" % (1 + n % 2), with_id=True) for n in range(count)]
    valid = schema.validate_records(schema.records_to_frame(records), first_row=0).valid
    sequences = [str(10**30 + n) for n in range(count)] if source == tables.STREAM else None
    return tables.with_provenance(tables.events_from_frame(valid), source=source,
                                  ingested_at=dt.datetime.now(dt.timezone.utc),
                                  shard_id="shard-0" if sequences else None, sequence_numbers=sequences)


def exercise(resource) -> None:
    table, stale = resource.open(), resource.open()
    stream = rows(tables.STREAM, 10)
    assert tables.append_stream(table, "st", [tables.StreamBatch("shard-0", str(10**30 + 6), stream.slice(0, 7))]) == 7
    assert tables.append_stream(stale, "st", [tables.StreamBatch("shard-0", str(10**30 + 9), stream)]) == 3
    days = [dt.date(2020, 2, 1), dt.date(2020, 2, 2)]
    tables.replace_batch_days(table, days, rows(tables.BATCH, 8))
    tables.replace_batch_days(stale, days, rows(tables.BATCH, 6))
    table = resource.open()  # loaded again through the catalog
    counts = tables.scan(table, columns=("source",)).column("source").value_counts().to_pylist()
    assert sorted((c["values"], c["counts"]) for c in counts) == [(tables.BATCH, 6), (tables.STREAM, 10)]
    assert tables.stream_marks(table, "st") == {"shard-0": str(10**30 + 9)}


def test_sqlite_catalog_under_the_home(provisioned, appdata_env):
    resource = provisioned["lake_table"]
    assert resource.catalog == f"sqlite:///{appdata_env.home / 'lake-catalog.db'}"
    exercise(resource)


def test_postgresql_catalog(provisioned, postgres_url):
    exercise(provisioned["lake_table"].model_copy(update={"catalog": postgres_url,
                                                          "namespace": f"t{uuid.uuid4().hex[:8]}"}))


def test_glue_catalog(provisioned):
    resource = provisioned["lake_table"].model_copy(update={"catalog": "glue", "namespace": f"t{uuid.uuid4().hex[:8]}"})
    assert resource.glue_endpoint_url  # the emulator's; on AWS none, and boto3 finds Glue itself
    exercise(resource)
    assert "glue" in type(resource.open().catalog).__name__.lower()
