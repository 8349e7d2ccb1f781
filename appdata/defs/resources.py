"""Dagster resources: the only doors from our code to AWS, the warehouse and the simulated clients.

S3 comes from dagster-aws; Kinesis and DynamoDB share dagster-aws's boto3 configuration; the
warehouse is SQLAlchemy over DuckDB (embedded default), PostgreSQL (tests' Redshift stand-in)
or Redshift; DataFrame assets are Parquet objects in the lake bucket (`LakeParquetIOManager`).
`build_resources()` wires them from `Settings`, so every knob shows in the UI; secrets only ever
arrive through `dagster.EnvVar` or boto3's own credential chain.
"""

from __future__ import annotations

import io
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field
from pyiceberg.table import Table
from sqlalchemy.engine import make_url

from appdata import aws
from appdata.config import Settings, aws_client_kwargs, parse_api_keys
from appdata.contract import layout
from appdata.lake.tables import CatalogConfig, catalog_config, open_table


def boto3_client(service: str, resource: ResourceWithBoto3Configuration) -> Any:
    """A client from dagster-aws's boto3 fields, with `appdata.aws`'s one retry policy."""
    return aws.client(
        service,
        profile_name=resource.profile_name,
        max_attempts=resource.max_attempts,
        region_name=resource.region_name,
        endpoint_url=resource.endpoint_url,
        use_ssl=resource.use_ssl,
        verify=resource.verify,
        aws_access_key_id=resource.aws_access_key_id,
        aws_secret_access_key=resource.aws_secret_access_key,
        aws_session_token=resource.aws_session_token,
    )


# S3, DynamoDB and warehouse calls can fail for a minute (throttling past botocore's own retries,
# a failover, a dropped connection); an asset doing such I/O is retried whole, after 10 s, 20 s,
# 40 s. Data problems raise `dg.Failure(allow_retries=False)` and fail at once.
TRANSIENT_IO_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class LakeS3Resource(S3Resource):
    """S3 (dagster-aws) plus the bucket that holds landing/, curated/, lake/, rejected/, reports/."""

    bucket: str = Field(description="Bucket of the data lake")


class KinesisResource(ResourceWithBoto3Configuration):
    """The Kinesis stream that buffers app-download events between the API and the drain."""

    stream_name: str = Field(description="Kinesis stream name")

    def get_client(self) -> Any:
        return boto3_client("kinesis", self)


class DynamoDBResource(ResourceWithBoto3Configuration):
    """The DynamoDB table serving downloads and recommendations by user_id, and the drain's
    shard leases and checkpoints (`appdata.stream.leases`)."""

    table_name: str = Field(description="DynamoDB table name")
    lease_table_name: str = Field(description="DynamoDB table of the Kinesis drain's shard leases and checkpoints")

    def get_client(self) -> Any:
        return boto3_client("dynamodb", self)


def optional_secret(env_var: str | None) -> str | None:
    """The secret in `env_var`, read through `dg.EnvVar` in the process that uses it; None when unset.

    Dagster 1.13 resolves a field bound to `dg.EnvVar` when the run starts and fails the run if the
    variable is unset (`_ensure_env_variable` in dagster/_config/source.py): right for a secret every
    deployment has, wrong for one only some have (a password-less DuckDB or trust-auth PostgreSQL
    warehouse). Such a resource names the variable (shown in the UI) and reads it here at use time,
    never at code load time, when the code server's environment may differ from the run's.
    """
    return dg.EnvVar(env_var).get_value() if env_var else None


class WarehouseResource(dg.ConfigurableResource):
    """SQLAlchemy engine for the warehouse: duckdb:///file, postgresql://..., redshift+psycopg2://...

    The password, when needed, comes separately (the variable `password_env_var` names) so the
    URL itself can be shown in logs and the UI.
    """

    url: str = Field(description="SQLAlchemy URL without password")
    password_env_var: str | None = Field(
        default="APPDATA_WAREHOUSE_PASSWORD",
        description="Environment variable holding the warehouse password, read when connecting; unset: no password",
    )
    copy_iam_role: str | None = Field(
        default=None, description="IAM role Redshift assumes for COPY from S3 (Redshift only)"
    )

    @contextmanager
    def connect(self) -> Iterator[sa.Engine]:
        """An engine for one block of work, disposed at its end (DuckDB's file lock goes with it)."""
        engine = self.get_engine()
        try:
            yield engine
        finally:
            engine.dispose()

    def get_engine(self) -> sa.Engine:
        url = make_url(self.url)
        password = optional_secret(self.password_env_var)
        if password:
            url = url.set(password=password)
        if url.get_backend_name() == "duckdb":
            # NullPool: release DuckDB's single-writer file lock as soon as each block ends.
            database = url.database
            if database and database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            sa.event.listen(engine, "do_connect", _wait_for_duckdb_lock)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()


DUCKDB_LOCK_WAIT_SECONDS = 120.0


def _wait_for_duckdb_lock(dialect: Any, conn_rec: Any, cargs: tuple, cparams: dict) -> Any:
    """Open the DuckDB file, waiting while another process holds its single-writer lock.

    Dagster's "warehouse" pool serializes runs, but a demo, a test or a second CLI can still
    open the file at the same moment; they queue here instead of failing on the lock.
    """
    deadline = time.monotonic() + DUCKDB_LOCK_WAIT_SECONDS
    delay = 0.05
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:  # duckdb.IOException: "Could not set lock on file"
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class LakeTableResource(dg.ConfigurableResource):
    """The lake's Iceberg table of downloads (`appdata.lake.tables`) through its catalog.

    `catalog` is `glue` (AWS Glue Data Catalog, production) or the SQLAlchemy URL of a SQL
    catalog: `sqlite:///<home>/lake-catalog.db` locally and in tests, `postgresql://...` to share
    one (its password in the variable `password_env_var` names). Data and metadata files go to
    the lake bucket under `tables/`, through the same S3 endpoint as every other S3 call.
    """

    catalog: str = Field(description="`glue`, or the SQLAlchemy URL of a SQL catalog (without password)")
    namespace: str = Field(default="appdata", description="Catalog namespace (Glue database) of the table")
    bucket: str = Field(description="Bucket whose tables/ prefix is the Iceberg warehouse")
    region_name: str | None = Field(default=None, description="AWS region of S3 (and Glue)")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint; none: AWS's own")
    glue_endpoint_url: str | None = Field(default=None, description="Glue endpoint (catalog `glue`); none: AWS's own")
    aws_access_key_id: str | None = Field(default=None, description="Only for the local emulator")
    aws_secret_access_key: str | None = Field(default=None, description="Only for the local emulator")
    password_env_var: str | None = Field(
        default="APPDATA_LAKE_CATALOG_PASSWORD",
        description="Environment variable holding a SQL catalog's password, read when connecting; unset: none")

    def catalog_config(self) -> CatalogConfig:
        catalog = self.catalog
        password = optional_secret(self.password_env_var) if catalog != "glue" else None
        if password:
            catalog = make_url(catalog).set(password=password).render_as_string(hide_password=False)
        return catalog_config(catalog, self.bucket, namespace=self.namespace, region_name=self.region_name,
                              endpoint_url=self.endpoint_url, aws_access_key_id=self.aws_access_key_id,
                              aws_secret_access_key=self.aws_secret_access_key,
                              glue_endpoint_url=self.glue_endpoint_url)

    def open(self) -> Table:
        """The downloads table, created when missing."""
        return open_table(self.catalog_config())


class SimulatedClientsResource(dg.ConfigurableResource):
    """The simulated batch and stream clients: where they keep their own files (not our AWS) and
    how they make their data (catalogue, seed, users' preferences, rows a day, their 'today')."""

    client_dir: str = Field(description="Directory of the clients' own files ($APPDATA_HOME/client)")
    catalogue_csv: str | None = Field(
        default=None, description="Google Play Store catalogue CSV; none: a deterministic synthetic one")
    seed: int = Field(description="Seed of the synthetic catalogue, the users and their downloads")
    preferences: str = Field(description="How users pick apps: `taste` (their categories) or `uniform`")
    rows_per_day: int | None = Field(
        default=None, description="Batch client rows a day; none: about len(apps)/366, as in the seed")
    timezone: str = Field(description="Timezone of the stream client's download date (today)")

    @property
    def client_path(self) -> Path:
        return Path(self.client_dir)


class IngestApiResource(dg.ConfigurableResource):
    """The ingest API the stream client posts to, and the variable holding the client's API key."""

    url: str = Field(description="Base URL of the ingest API")
    api_keys_env_var: str = Field(
        default="APPDATA_API_KEYS",
        description="Environment variable of the API keys (comma separated); the client sends the first")

    def api_key(self) -> str:
        keys = parse_api_keys(optional_secret(self.api_keys_env_var))
        if not keys:
            raise RuntimeError(f"{self.api_keys_env_var} is not set (the first key is sent as x-api-key)")
        return keys[0]


class LocalReportResource(dg.ConfigurableResource):
    """Where the analytics report's local copy is written: `<home>/reports/appdata_report.html`."""

    home: str = Field(description="APPDATA_HOME, under which reports/ is written")

    @property
    def home_path(self) -> Path:
        return Path(self.home)


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    """A DataFrame as Parquet bytes, with pandas' metadata (dtypes, index) for `frame_from_parquet`.

    An object column holding several Python types (str and int, ...) has no Parquet type: it is
    refused with the column's name rather than converted, because a silent conversion would hand
    later runs a different value than the asset produced.
    """
    try:
        table = pa.Table.from_pandas(frame)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise TypeError(
            f"this DataFrame cannot be stored as Parquet as it is ({exc}); give the column one type "
            "in the asset (e.g. .astype(str)) so every run loads the same value"
        ) from exc
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def frame_from_parquet(data: bytes) -> pd.DataFrame:
    """The DataFrame `frame_to_parquet` stored, object columns included.

    pandas 3 reads Parquet strings as its `str` dtype (nulls as NaN); a column that was `object`
    (the raw catalogue's text, None for missing) is turned back into `object` with None, so a
    downstream asset sees what the upstream returned.
    """
    table = pq.read_table(pa.BufferReader(data))
    frame = table.to_pandas()
    pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    for column in pandas_meta.get("columns", []):
        name = column.get("name")
        if column.get("numpy_type") == "object" and name in frame.columns and frame[name].dtype != object:
            values = frame[name].astype(object)
            frame[name] = values.where(values.notna(), None)
    return frame


class LakeParquetIOManager(dg.ConfigurableIOManager):
    """DataFrame assets as Parquet in the lake bucket, at `layout.asset_value_key`.

    Under the EcsRunLauncher every run is a fresh task with an empty disk, so an asset's value must
    live where any later run on any machine reads it: the `s3` resource's bucket, endpoint and
    credentials. One object per partition; a run over several partitions stores a dict
    {partition key: DataFrame} and an input spanning several partitions loads one.
    """

    s3: LakeS3Resource

    def _key(self, asset_key: dg.AssetKey, partition_key: str | None) -> str:
        return layout.asset_value_key(asset_key.path, partition_key)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_key:
            raise TypeError(f"{context.step_key}: {type(self).__name__} stores asset values only")
        if not context.has_asset_partitions:
            frames = {None: obj}
        elif len(context.asset_partition_keys) == 1:
            frames = {context.asset_partition_keys[0]: obj}
        elif isinstance(obj, dict) and set(obj) == set(context.asset_partition_keys):
            frames = obj
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: a run over {len(context.asset_partition_keys)} "
                            "partitions must return a dict {partition key: DataFrame} with one entry each")
        client = self.s3.get_client()
        uris, size = [], 0
        for partition_key, frame in frames.items():
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"{context.asset_key.to_user_string()}: {type(self).__name__} stores DataFrames, "
                                f"got {type(frame).__name__}")
            body = frame_to_parquet(frame)
            key = self._key(context.asset_key, partition_key)
            client.put_object(Bucket=self.s3.bucket, Key=key, Body=body)
            uris.append(f"s3://{self.s3.bucket}/{key}")
            size += len(body)
        location = {"s3_uri": dg.MetadataValue.url(uris[0])} if len(uris) == 1 else {"s3_uris": dg.MetadataValue.json(uris)}
        context.add_output_metadata({**location, "bytes": size})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict[str, pd.DataFrame]:
        client = self.s3.get_client()

        def load(partition_key: str | None) -> pd.DataFrame:
            key = self._key(context.asset_key, partition_key)
            try:
                body = client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if not aws.is_missing(exc):
                    raise
                raise FileNotFoundError(f"s3://{self.s3.bucket}/{key}: no stored value of "
                                        f"{context.asset_key.to_user_string()}; materialize it first") from None
            return frame_from_parquet(body)

        if not context.has_asset_partitions:
            return load(None)
        keys = context.asset_partition_keys
        return load(keys[0]) if len(keys) == 1 else {key: load(key) for key in keys}


# Op results that are a run's own report, read by nothing after the run (the stream client's
# outcome): kept in memory, where the lake IO manager, which stores asset values, does not go.
RUN_MEMORY_IO_MANAGER = "run_memory_io_manager"


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Resources keyed as assets expect them: s3, kinesis, dynamodb, warehouse, lake_table, io_manager, the
    simulated clients, the ingest API they post to and the report's local home."""
    settings = settings or Settings.from_env()
    copy_role = os.environ.get("APPDATA_REDSHIFT_COPY_ROLE_ARN") or None
    lake = LakeS3Resource(bucket=settings.bucket, **aws_client_kwargs(settings, "s3"))
    return {
        "s3": lake,
        "io_manager": LakeParquetIOManager(s3=lake),
        RUN_MEMORY_IO_MANAGER: dg.InMemoryIOManager(),
        "kinesis": KinesisResource(stream_name=settings.stream, **aws_client_kwargs(settings, "kinesis")),
        "dynamodb": DynamoDBResource(table_name=settings.table, lease_table_name=settings.lease_table,
                                     **aws_client_kwargs(settings, "dynamodb")),
        "warehouse": WarehouseResource(url=settings.warehouse_url, copy_iam_role=copy_role),
        "lake_table": LakeTableResource(
            catalog=settings.lake_catalog, bucket=settings.bucket, glue_endpoint_url=settings.aws_endpoints.url("glue"),
            **{key: value for key, value in aws_client_kwargs(settings, "s3").items() if key != "use_ssl"}),
        "clients": SimulatedClientsResource(
            client_dir=str(settings.client_dir), catalogue_csv=settings.playstore_csv, seed=settings.seed,
            preferences=settings.preferences, rows_per_day=settings.batch_rows_per_day, timezone=settings.timezone),
        "ingest_api": IngestApiResource(url=settings.api_url),
        "local_report": LocalReportResource(home=str(settings.home)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
