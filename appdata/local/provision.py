"""Create the bucket, stream, table and warehouse schema, idempotently, wherever configured.

Runs against the emulator or real AWS alike (only the endpoint differs); running it twice is
a no-op. In production `infra/` creates the AWS side with CloudFormation and this only checks.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from appdata.defs.resources import DynamoDBResource, KinesisResource, LakeS3Resource, WarehouseResource
from appdata.warehouse.loader import create_schema

log = logging.getLogger(__name__)


def ensure_bucket(s3: LakeS3Resource) -> str:
    client = s3.get_client()
    try:
        client.head_bucket(Bucket=s3.bucket)
        return "exists"
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs: dict[str, Any] = {"Bucket": s3.bucket}
    if s3.region_name and s3.region_name != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s3.region_name}
    client.create_bucket(**kwargs)
    return "created"


def ensure_stream(kinesis: KinesisResource, shards: int = 1) -> str:
    client = kinesis.get_client()
    try:
        client.describe_stream_summary(StreamName=kinesis.stream_name)
        state = "exists"
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        client.create_stream(StreamName=kinesis.stream_name, ShardCount=shards)
        state = "created"
    client.get_waiter("stream_exists").wait(StreamName=kinesis.stream_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return state


def _ensure_dynamodb_table(dynamodb: DynamoDBResource, name: str, keys: dict[str, str]) -> str:
    """An on-demand table with string keys (`keys`: attribute -> HASH or RANGE), created if absent."""
    client = dynamodb.get_client()
    try:
        client.describe_table(TableName=name)
        state = "exists"
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        client.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"} for key in keys],
            KeySchema=[{"AttributeName": key, "KeyType": kind} for key, kind in keys.items()],
            BillingMode="PAY_PER_REQUEST",
        )
        state = "created"
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return state


def ensure_table(dynamodb: DynamoDBResource) -> str:
    """Single-table design: pk user_id, sk "DL#<date>#<event_id>" for downloads, "REC" for recs."""
    return _ensure_dynamodb_table(dynamodb, dynamodb.table_name, {"user_id": "HASH", "sk": "RANGE"})


def ensure_lease_table(dynamodb: DynamoDBResource) -> str:
    """The drain's shard leases and checkpoints: pk shard ("<stream>/<shard id>")."""
    return _ensure_dynamodb_table(dynamodb, dynamodb.lease_table_name, {"shard": "HASH"})


def provision(resources: dict[str, Any], *, shards: int = 1) -> dict[str, str]:
    """Ensure every store exists; returns what was created and what already existed."""
    report = {
        f"s3://{resources['s3'].bucket}": ensure_bucket(resources["s3"]),
        f"kinesis:{resources['kinesis'].stream_name}": ensure_stream(resources["kinesis"], shards),
        f"dynamodb:{resources['dynamodb'].table_name}": ensure_table(resources["dynamodb"]),
        f"dynamodb:{resources['dynamodb'].lease_table_name}": ensure_lease_table(resources["dynamodb"]),
    }
    warehouse: WarehouseResource = resources["warehouse"]
    with warehouse.connect() as engine:
        tables = create_schema(engine)
    report[f"warehouse:{warehouse.dialect}"] = "tables " + ", ".join(tables)
    return report
