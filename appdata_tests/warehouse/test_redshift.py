"""No Redshift runs here, so the Redshift load is checked where it can be: its SQL must compile
with the redshift dialect and say COPY ... PARQUET MANIFEST, then delete + insert the window."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from appdata.batch.etl import CURATED_SCHEMA
from appdata.warehouse import redshift
from appdata.warehouse.tables import TABLES

ROLE = "arn:aws:iam::123456789012:role/appdata-redshift-copy"


def test_copy_and_swap_of_a_window_compiles_for_redshift():
    statements = redshift.copy_replace_statements(
        "downloads_batch", "s3://lake/curated/_manifests/downloads_batch/2020-01-01_2021-01-01.manifest", ROLE,
        column="download_date", start=dt.date(2020, 1, 1), end=dt.date(2021, 1, 1))
    create, copy, delete, insert, drop = redshift.compile_statements(statements)
    assert create == 'CREATE TEMP TABLE "downloads_batch_staging" (LIKE "downloads_batch")'
    assert copy.startswith("COPY downloads_batch_staging FROM 's3://lake/curated/_manifests/downloads_batch/")
    assert f"aws_iam_role={ROLE}" in copy
    assert "FORMAT AS PARQUET" in copy and "MANIFEST" in copy
    assert delete == ("DELETE FROM downloads_batch WHERE downloads_batch.download_date >= '2020-01-01' "
                      "AND downloads_batch.download_date < '2021-01-01'")
    assert insert.startswith("INSERT INTO downloads_batch (event_id, user_id,")
    assert "FROM downloads_batch_staging" in insert
    assert drop == 'DROP TABLE "downloads_batch_staging"'


def test_curated_parquet_columns_follow_the_table_order_copy_relies_on():
    table_columns = [c.name for c in TABLES["downloads_batch"].columns]
    assert CURATED_SCHEMA.names == table_columns
    assert CURATED_SCHEMA.field("download_date").type == pa.date32()


def test_manifest_lists_every_file_as_mandatory_with_its_length():
    text = redshift.manifest([redshift.ParquetObject("s3://lake/curated/batch/download_date=2020-01-01/part.parquet", 1234)])
    assert json.loads(text) == {"entries": [{"url": "s3://lake/curated/batch/download_date=2020-01-01/part.parquet",
                                             "mandatory": True, "meta": {"content_length": 1234}}]}


def test_stream_copy_appends_only_unseen_events_and_compiles_for_redshift():
    """The drain's Redshift path: COPY the range's gzip JSON lines, insert ids not yet loaded."""
    from appdata.warehouse.redshift import copy_insert_new_statements, json_manifest

    statements = copy_insert_new_statements("downloads_stream", "s3://lake/manifests/stream/x.manifest",
                                            "arn:aws:iam::123456789012:role/copy")
    sql = redshift.compile_statements(statements)
    assert sql[0] == 'CREATE TEMP TABLE "downloads_stream_staging" (LIKE "downloads_stream")'
    copy = " ".join(sql[1].split())
    assert "COPY downloads_stream_staging" in copy and "FORMAT AS JSON AS 'auto'" in copy
    assert "GZIP" in copy and "MANIFEST" in copy and "arn:aws:iam::123456789012:role/copy" in copy
    insert = " ".join(sql[2].split())
    assert insert.startswith("INSERT INTO downloads_stream (event_id, user_id,")
    assert "row_number() OVER (PARTITION BY downloads_stream_staging.event_id" in insert
    assert "NOT (EXISTS (SELECT * FROM downloads_stream WHERE downloads_stream.event_id = ranked.event_id))" in insert
    assert sql[3] == 'DROP TABLE "downloads_stream_staging"'
    assert json.loads(json_manifest(["s3://b/k1"])) == {"entries": [{"url": "s3://b/k1", "mandatory": True}]}


def test_download_tables_keep_a_users_rows_together_and_sorted_by_day_then_user():
    """Redshift has no index: the recommendation refresh's `user_id IN (...)` leans on the
    distribution key and on zone maps of the second sort column."""
    from sqlalchemy.schema import CreateTable
    from sqlalchemy_redshift.dialect import RedshiftDialect_psycopg2

    for table in ("downloads_batch", "downloads_stream"):
        ddl = str(CreateTable(TABLES[table]).compile(dialect=RedshiftDialect_psycopg2()))
        assert ddl.rstrip().endswith("DISTSTYLE KEY DISTKEY (user_id) SORTKEY (download_date, user_id)"), ddl
        assert "INDEX" not in ddl
