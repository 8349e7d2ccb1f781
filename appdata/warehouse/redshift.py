"""Redshift loads: COPY from Parquet on S3 into a staging table, then swap the rows in one transaction.

Why not loader.bulk_insert: Redshift ingests at speed only through COPY, which reads S3 from
the cluster itself; an INSERT of local rows crawls. The sequence, inside ONE transaction:

    CREATE TEMP TABLE <table>_staging (LIKE <table>);
    COPY <table>_staging FROM 's3://.../<window>.manifest' IAM_ROLE ... FORMAT AS PARQUET MANIFEST;
    DELETE FROM <table> WHERE <column> >= :start AND <column> < :end;
    INSERT INTO <table> SELECT * FROM <table>_staging;

so readers see the window before or after, never half of it, and a re-run replaces instead of
doubling. Parquet columns are matched by position, so the curated files are written in the
table's column order (appdata.batch.etl.CURATED_SCHEMA follows schema.FIELDS like tables.py).
No Redshift runs here: appdata_tests/test_batch_redshift.py checks that this SQL compiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy_redshift.commands import Compression, CopyCommand, Format

from appdata.warehouse.tables import TABLES


@dataclass(frozen=True)
class ParquetObject:
    uri: str  # s3://bucket/key
    content_length: int  # bytes; Redshift requires it in manifests of columnar files


def manifest(objects: Sequence[ParquetObject]) -> str:
    """A COPY manifest: every file mandatory, so a missing day fails the load instead of skipping it."""
    return json.dumps(
        {"entries": [{"url": o.uri, "mandatory": True, "meta": {"content_length": o.content_length}} for o in objects]},
        indent=1,
    )


def staging_table(table: str) -> sa.Table:
    """A column-for-column copy of `table`, created per load as a session TEMP table."""
    target = TABLES[table]
    return sa.Table(
        f"{table}_staging",
        sa.MetaData(),
        *[sa.Column(c.name, c.type, nullable=True) for c in target.columns],
        prefixes=["TEMPORARY"],
    )


def copy_replace_statements(
    table: str,
    manifest_uri: str,
    iam_role_arn: str,
    *,
    column: str,
    start: Any,
    end: Any,
) -> list[Any]:
    """The statements of one Redshift load, in order (run them in one transaction): rows with
    start <= column < end (a day or a backfill window) are replaced."""
    target = TABLES[table]
    staging = staging_table(table)
    copy = CopyCommand(
        staging,
        data_location=manifest_uri,
        iam_role_arns=iam_role_arn,
        format=Format.parquet,
        manifest=True,
    )
    delete = sa.delete(target).where(target.c[column] >= start, target.c[column] < end)
    insert = sa.insert(target).from_select([c.name for c in target.columns], sa.select(*staging.columns))
    return [
        sa.text(f'CREATE TEMP TABLE "{staging.name}" (LIKE "{table}")'),
        copy,
        delete,
        insert,
        sa.text(f'DROP TABLE "{staging.name}"'),
    ]


def compile_statements(statements: Sequence[Any], dialect: sa.engine.Dialect | None = None) -> list[str]:
    """SQL text as Redshift would receive it (literal binds), for logs and tests."""
    if dialect is None:
        from sqlalchemy_redshift.dialect import RedshiftDialect_psycopg2

        dialect = RedshiftDialect_psycopg2()
    return [str(s.compile(dialect=dialect, compile_kwargs={"literal_binds": True})) for s in statements]


def copy_replace(
    engine: sa.Engine,
    table: str,
    manifest_uri: str,
    iam_role_arn: str | None,
    *,
    column: str,
    start: Any,
    end: Any,
) -> None:
    """Run the COPY + swap in one transaction on a Redshift engine."""
    if not iam_role_arn:
        raise ValueError("Redshift COPY needs an IAM role: set APPDATA_REDSHIFT_COPY_ROLE_ARN")
    with engine.begin() as conn:
        for statement in copy_replace_statements(table, manifest_uri, iam_role_arn, column=column, start=start, end=end):
            conn.execute(statement)


def copy_insert_new_statements(table: str, manifest_uri: str, iam_role_arn: str, *, key: str = "event_id") -> list[Any]:
    """COPY gzip JSON lines (the stream lake's objects) into staging, insert only unseen `key`s.

    The stream's twin of `copy_replace_statements`: a drained range is appended, never replaced,
    and a replayed range (same event ids) inserts nothing. JSON 'auto' maps keys to column names;
    the lake's extra keys (sequence_number, arrived_at) are ignored.
    """
    target = TABLES[table]
    staging = staging_table(table)
    columns = [c.name for c in target.columns]
    copy = CopyCommand(staging, data_location=manifest_uri, iam_role_arns=iam_role_arn, format=Format.json,
                       path_file="auto", compression=Compression.gzip, manifest=True)
    ranked = sa.select(*staging.columns, sa.func.row_number().over(partition_by=staging.c[key], order_by=staging.c[key])
                       .label("_n")).subquery("ranked")
    fresh = (
        sa.select(*[ranked.c[c] for c in columns])
        .where(ranked.c["_n"] == 1)
        .where(~sa.exists().where(target.c[key] == ranked.c[key]))
    )
    return [
        sa.text(f'CREATE TEMP TABLE "{staging.name}" (LIKE "{table}")'),
        copy,
        sa.insert(target).from_select(columns, fresh),
        sa.text(f'DROP TABLE "{staging.name}"'),
    ]


def json_manifest(uris: Sequence[str]) -> str:
    """A COPY manifest for row-format files (no content_length needed), every file mandatory."""
    return json.dumps({"entries": [{"url": u, "mandatory": True} for u in uris]}, indent=1)


def copy_insert_new(engine: sa.Engine, table: str, s3: Any, bucket: str, keys: Sequence[str],
                    iam_role_arn: str | None, *, manifest_key: str) -> int:
    """Append the records of the lake objects `keys` to `table` on Redshift, skipping known ids."""
    if not iam_role_arn:
        raise ValueError("Redshift COPY needs an IAM role: set APPDATA_REDSHIFT_COPY_ROLE_ARN")
    if not keys:
        return 0
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=json_manifest([f"s3://{bucket}/{k}" for k in keys]).encode())
    inserted = 0
    with engine.begin() as conn:
        for statement in copy_insert_new_statements(table, f"s3://{bucket}/{manifest_key}", iam_role_arn):
            result = conn.execute(statement)
            if isinstance(statement, sa.sql.Insert):
                inserted = max(result.rowcount, 0)
    return inserted
