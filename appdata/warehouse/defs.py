"""Dagster definitions of the `warehouse` group: the `apps` and `users` dimension tables.

Each load replaces the whole table in one transaction (loader.replace_all; COPY + swap on
Redshift), so a reader never sees a half-loaded dimension. Like every warehouse writer they run
in pool "warehouse": the embedded DuckDB file takes one writer process at a time.
"""

import io

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from appdata.resources import LakeS3Resource, WarehouseResource
from appdata.warehouse import loader, redshift
from appdata.warehouse.tables import TABLES

GROUP = "warehouse"


def _arrow_type(column: sa.Column) -> pa.DataType:
    if isinstance(column.type, sa.BigInteger):
        return pa.int64()
    if isinstance(column.type, sa.Float):
        return pa.float64()
    if isinstance(column.type, sa.Date):
        return pa.date32()
    return pa.string()


def _replace_dimension(table: str, frame: pd.DataFrame, s3: LakeS3Resource, warehouse: WarehouseResource) -> int:
    columns = [c.name for c in TABLES[table].columns]
    frame = frame[columns].reset_index(drop=True)
    engine = warehouse.get_engine()
    try:
        if warehouse.dialect == "redshift":
            schema = pa.schema([pa.field(c.name, _arrow_type(c)) for c in TABLES[table].columns])
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), buffer)
            key = f"curated/dimensions/{table}/part.parquet"
            body = buffer.getvalue()
            client = s3.get_client()
            client.put_object(Bucket=s3.bucket, Key=key, Body=body)
            manifest_key = f"curated/_manifests/{table}.manifest"
            entry = redshift.ParquetObject(f"s3://{s3.bucket}/{key}", len(body))
            client.put_object(Bucket=s3.bucket, Key=manifest_key, Body=redshift.manifest([entry]).encode())
            redshift.copy_replace(engine, table, f"s3://{s3.bucket}/{manifest_key}", warehouse.copy_iam_role)
            return len(frame)
        return loader.replace_all(engine, table, frame)
    finally:
        engine.dispose()


@dg.asset(
    name="apps",
    group_name=GROUP,
    kinds={"sql"},
    pool="warehouse",
    description="Warehouse dimension `apps`: the cleaned catalogue, one row per app, replaced whole.",
)
def apps_table(playstore_apps: pd.DataFrame, s3: LakeS3Resource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    rows = _replace_dimension("apps", playstore_apps, s3, warehouse)
    return dg.MaterializeResult(metadata={"dagster/row_count": rows, "warehouse": warehouse.dialect,
                                          "categories": int(playstore_apps["category"].nunique())})


@dg.asset(
    name="users",
    group_name=GROUP,
    kinds={"sql"},
    pool="warehouse",
    description="Warehouse dimension `users`: batch and stream clients' users (id, name, location, "
    "age, client), replaced whole.",
)
def users_table(users_batch: pd.DataFrame, users_stream: pd.DataFrame, s3: LakeS3Resource,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    frame = pd.concat([users_batch, users_stream], ignore_index=True)
    duplicated = int(frame["user_id"].duplicated().sum())
    if duplicated:
        raise dg.Failure(f"{duplicated} user_id(s) appear in both the batch and the stream users")
    rows = _replace_dimension("users", frame, s3, warehouse)
    return dg.MaterializeResult(metadata={"dagster/row_count": rows, "warehouse": warehouse.dialect,
                                          "per_client": dg.MetadataValue.json(frame["client"].value_counts().to_dict())})


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[apps_table, users_table])
