"""Dagster resources: the only doors from our code to AWS and to the warehouse.

S3 comes from dagster-aws; Kinesis and DynamoDB share dagster-aws's boto3 configuration; the
warehouse is SQLAlchemy over DuckDB (embedded default), PostgreSQL (tests' Redshift stand-in)
or Redshift. `build_resources()` wires them from `Settings`; secrets only ever arrive through
`dagster.EnvVar` or boto3's own credential chain.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Iterator

import dagster as dg
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field
from sqlalchemy.engine import make_url

from appdata import aws
from appdata.config import Settings, aws_client_kwargs


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
    """The DynamoDB table serving downloads and recommendations by user_id."""

    table_name: str = Field(description="DynamoDB table name")

    def get_client(self) -> Any:
        return boto3_client("dynamodb", self)


class WarehouseResource(dg.ConfigurableResource):
    """SQLAlchemy engine for the warehouse: duckdb:///file, postgresql://..., redshift+psycopg2://...

    The password, when needed, comes separately (APPDATA_WAREHOUSE_PASSWORD via EnvVar) so the
    URL itself can be shown in logs and the UI.
    """

    url: str = Field(description="SQLAlchemy URL without password")
    password: str | None = Field(default=None, description="Warehouse password (from the environment)")
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
        if self.password:
            url = url.set(password=self.password)
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


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Resources keyed as assets expect them: s3, kinesis, dynamodb, warehouse."""
    settings = settings or Settings.from_env()
    aws = aws_client_kwargs(settings)
    password = dg.EnvVar("APPDATA_WAREHOUSE_PASSWORD") if os.environ.get("APPDATA_WAREHOUSE_PASSWORD") else None
    copy_role = os.environ.get("APPDATA_REDSHIFT_COPY_ROLE_ARN") or None
    return {
        "s3": LakeS3Resource(bucket=settings.bucket, **aws),
        "kinesis": KinesisResource(stream_name=settings.stream, **aws),
        "dynamodb": DynamoDBResource(table_name=settings.table, **aws),
        "warehouse": WarehouseResource(url=settings.warehouse_url, password=password, copy_iam_role=copy_role),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
