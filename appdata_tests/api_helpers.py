"""Helpers shared by the API tests and the API benchmark: sample events, Kinesis read-back,
DynamoDB items per the contract, API Gateway proxy events."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any


def sample_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid event as a client would POST it (JSON types)."""
    day = dt.date(2024, 1, 1) + dt.timedelta(days=i % 28)
    record = {
        "user_id": 1000 + i % 50,
        "name": f"Person {i}",
        "location": "California",
        "age": 20 + i % 50,
        "app": f"App {i}",
        "category": "GAME",
        "rating": 4.2,
        "reviews": 100 + i,
        "size_mb": None if i % 7 == 0 else 12.5,
        "installs": 10000,
        "type": "Free",
        "price": 0.0,
        "content_rating": "Everyone",
        "genres": "Arcade;Action",
        "last_updated": "2018-07-01",
        "current_ver": "1.2.3",
        "android_ver": "4.1 and up",
        "minutes_spent": 30 + i % 60,
        "download_date": day.isoformat(),
    }
    record.update(overrides)
    return record


def read_stream(kinesis_client: Any, stream: str) -> list[dict[str, Any]]:
    """Every record currently in the stream, decoded, in shard order."""
    out: list[dict[str, Any]] = []
    for shard in kinesis_client.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis_client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = kinesis_client.get_records(ShardIterator=iterator, Limit=10000)
            out.extend({"data": json.loads(r["Data"]), "raw": r["Data"], "partition_key": r["PartitionKey"]}
                       for r in page["Records"])
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return out


def download_item(record: dict[str, Any]) -> dict[str, Any]:
    """The DynamoDB item the drain writes for a typed event (the table contract)."""
    item: dict[str, Any] = {
        "user_id": {"S": str(record["user_id"])},
        "sk": {"S": f"DL#{record['download_date']}#{record['event_id']}"},
    }
    for key, value in record.items():
        if key == "user_id" or value is None:
            continue
        item[key] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": str(value)}
    return item


def proxy_event(method: str, path: str, *, headers: dict[str, str] | None = None, body: str | bytes | None = None,
                query: dict[str, str] | None = None, base64_body: bool = False) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy integration event, as Lambda receives it."""
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "X-Forwarded-Proto": "https",
               "X-Forwarded-Port": "443", **(headers or {})}
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if base64_body else body.decode()
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/prod{path}", "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accountId": "123456789012",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        },
        "body": body,
        "isBase64Encoded": base64_body,
    }
