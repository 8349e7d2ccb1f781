"""The proof of an erasure: every place a user's data could be, read in full, traces counted.

Unlike the erasure, which goes to the days the user had downloads on, the proof reads every
object of every area (the raw archive, landing, curated, dead letters, asset values), every data
file under the table's location (current and older snapshots alike, and files no snapshot
references), the user's DynamoDB partition and every warehouse table and mart, and asks whether
the recommender was fitted after the erasure. Kinesis is reported apart: its records cannot be
deleted and expire with the stream's retention.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
from pyiceberg.table import Table

from appdata import aws
from appdata.privacy.erase import WAREHOUSE_TABLES, area_of, object_keys, rows_without


def object_traces(s3: Any, bucket: str, user_id: int) -> Counter:
    found: Counter = Counter()
    for key in object_keys(s3, bucket):
        _, count = rows_without(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read(), {user_id})
        if count:
            found[area_of(key)] += count
    return found


def table_file_traces(table: Table, s3: Any, user_id: int) -> int:
    """Rows of the user in any Parquet file under the table's location, referenced or not."""
    location = urlparse(table.location())
    bucket, prefix = location.netloc, location.path.lstrip("/") + "/data/"
    found = 0
    for key in aws.list_keys(s3, bucket, prefix):
        if key.endswith(".parquet"):
            found += rows_without(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read(), {user_id})[1]
    return found


def dynamodb_traces(dynamodb: Any, table: str, user_id: int) -> int:
    answer = dynamodb.query(TableName=table, KeyConditionExpression="user_id = :u", Select="COUNT",
                            ExpressionAttributeValues={":u": {"S": str(user_id)}})
    return int(answer.get("Count", 0))


def warehouse_traces(engine: sa.Engine, user_id: int) -> Counter:
    found: Counter = Counter()
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in WAREHOUSE_TABLES:
            if inspector.has_table(name):
                count = conn.execute(sa.text(f"SELECT COUNT(*) FROM {name} WHERE user_id = :u"), {"u": user_id}).scalar_one()
                if count:
                    found[name] = int(count)
    return found


def traces(*, user_id: int, s3: Any, bucket: str, table: Table, dynamodb: Any, dynamodb_table: str,
           engine: sa.Engine, model_fitted_at: dt.datetime | None, erased_at: dt.datetime | None) -> dict[str, int]:
    """Place -> rows of the user still there (places with none are left out); `recommender` is 1
    when the model was fitted before the erasure (it learnt from the user's history)."""
    found: Counter = Counter()
    found.update({f"s3 {area}": n for area, n in object_traces(s3, bucket, user_id).items()})
    found["lake table files"] = table_file_traces(table, s3, user_id)
    found["dynamodb"] = dynamodb_traces(dynamodb, dynamodb_table, user_id)
    found.update({f"warehouse {name}": n for name, n in warehouse_traces(engine, user_id).items()})
    if erased_at is not None and model_fitted_at is not None and model_fitted_at < erased_at:
        found["recommender"] = 1
    return {place: n for place, n in sorted(found.items()) if n}
