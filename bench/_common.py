"""Shared set-up of the benchmarks: the emulator's processes, a temp APPDATA_HOME, provisioning, the
bench event factory, and the emulator's per-service ceilings (`print_emulator_ceilings`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class BenchEnvironment:
    """The emulator in processes of its own, one per service (their CPU and memory are not the
    pipeline's), a temp home; `endpoints` says where each service is."""

    def __init__(self, name: str, extra_env: dict[str, str] | None = None):
        from appdata.local.emulator import emulator_process

        self.home = Path(tempfile.mkdtemp(prefix=f"appdata-{name}-"))
        self._stack = contextlib.ExitStack()
        self.endpoints = self._stack.enter_context(emulator_process())
        dagster_home = self.home / "dagster"
        dagster_home.mkdir(parents=True)
        shutil.copy(REPO / "appdata" / "local" / "dagster_local.yaml", dagster_home / "dagster.yaml")
        env = {
            "APPDATA_HOME": str(self.home),
            "DAGSTER_HOME": str(dagster_home),
            **self.endpoints.environment(),
            "APPDATA_BUCKET": f"appdata-bench-{name}",
            **(extra_env or {}),
        }
        for key in ("APPDATA_WAREHOUSE_URL", "APPDATA_PLAYSTORE_CSV"):
            os.environ.pop(key, None)
        os.environ.update(env)

    def provision(self) -> dict:
        from appdata.config import Settings
        from appdata.local.provision import ensure_bucket
        from appdata.defs.resources import build_resources
        from appdata.warehouse.loader import create_schema

        resources = build_resources(Settings.from_env())
        ensure_bucket(resources["s3"])
        engine = resources["warehouse"].get_engine()
        create_schema(engine)
        engine.dispose()
        return resources

    def provision_all(self, shards: int = 1) -> dict:
        """Bucket, stream (`shards` shards), tables and warehouse, as `appdata provision` makes them."""
        from appdata.config import Settings
        from appdata.defs.resources import build_resources
        from appdata.local.provision import provision

        resources = build_resources(Settings.from_env())
        provision(resources, shards=shards)
        return resources

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self.home, ignore_errors=True)


def bench_events(n: int, tag: str, users: int = 1000) -> list[dict]:
    """`n` valid, distinct download events as a client posts them (ids stable per tag and index)."""
    import datetime as dt
    import uuid

    today = dt.date.today().isoformat()
    return [{
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}-{i}")), "user_id": 100_001 + i % users,
        "name": "Bench User", "location": "Ohio", "age": 20 + i % 50, "app": f"App {i % 5000}",
        "category": "GAME", "rating": 4.1, "reviews": 1000 + i, "size_mb": 14.0, "installs": 100000, "type": "Free",
        "price": 0.0, "content_rating": "Everyone", "genres": "Arcade", "last_updated": "2018-06-01",
        "current_ver": "2.1", "android_ver": "4.4 and up", "minutes_spent": 5 + i % 90, "download_date": today,
    } for i in range(n)]


# --------------------------------------------------------------------------- emulator ceilings

OBJECT_BYTES = 50_000


def _aws_client(endpoints, service: str):
    from appdata import aws
    from appdata.config import emulator_credentials

    return aws.client(service, region_name="us-east-1", endpoint_url=endpoints.url(service), **emulator_credentials())


def kinesis_entries(n: int, tag: str) -> list[dict]:
    """`n` PutRecords entries: bench events as compact JSON (about 400 bytes), as the API puts them."""
    import json

    return [{"Data": json.dumps(event, separators=(",", ":")).encode(), "PartitionKey": str(event["user_id"])}
            for event in bench_events(n, tag)]


def download_items(events: list[dict]) -> list[dict]:
    """Items as the drain writes them to DynamoDB: pk user_id, sk DL#<date>#<event_id>, the event's fields."""
    return [{**event, "user_id": str(event["user_id"]), "sk": f"DL#{event['download_date']}#{event['event_id']}"}
            for event in events]


def create_stores(endpoints, name: str) -> None:
    """A one-shard stream, a table shaped as the pipeline's and a bucket, all named `name`."""
    kinesis, dynamodb = _aws_client(endpoints, "kinesis"), _aws_client(endpoints, "dynamodb")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"},
                                                {"AttributeName": "sk", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}])
    _aws_client(endpoints, "s3").create_bucket(Bucket=name)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def shard_iterator(kinesis, stream: str) -> str:
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    return kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]


def _rate(work, seconds: float, workers: int) -> float:
    """Units per second that `workers` threads get done calling `work(worker, call_number)` (which
    returns its units) for `seconds`."""
    import threading
    import time

    done = [0] * workers
    deadline = time.monotonic() + seconds

    def loop(worker: int) -> None:
        call = 0
        while time.monotonic() < deadline:
            done[worker] += work(worker, call)
            call += 1

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def emulator_ceilings(endpoints, seconds: float = 4.0, workers: int = 2) -> dict[str, float]:
    """Each service's ceiling through boto3 over HTTP, one service loaded at a time, `workers`
    clients calling back to back for `seconds`: Kinesis PutRecords (500 events of ~400 bytes) and
    GetRecords in records/s, DynamoDB BatchWriteItem (25 download items) in items/s, S3
    PutObject (OBJECT_BYTES) in objects/s. Uses stores of its own, whatever `endpoints` serves."""
    import uuid

    from appdata import aws

    name = f"ceiling-{uuid.uuid4().hex[:8]}"
    create_stores(endpoints, name)
    clients = {service: [_aws_client(endpoints, service) for _ in range(workers)]
               for service in ("kinesis", "dynamodb", "s3")}
    entries = kinesis_entries(aws.PUT_RECORDS_LIMIT, name)
    ceilings = {"kinesis PutRecords records/s": _rate(
        lambda w, _call: len(clients["kinesis"][w].put_records(StreamName=name, Records=entries)["Records"]),
        seconds, workers)}

    iterators = [shard_iterator(clients["kinesis"][w], name) for w in range(workers)]

    def get(worker: int, _call: int) -> int:
        page = clients["kinesis"][worker].get_records(ShardIterator=iterators[worker], Limit=10_000)
        iterators[worker] = page["NextShardIterator"] if page["Records"] else shard_iterator(clients["kinesis"][worker], name)
        return len(page["Records"])

    ceilings["kinesis GetRecords records/s"] = _rate(get, seconds, workers)
    batches = 1 + int(seconds * 200)  # more distinct batches than the run can write, so every item is new
    items = download_items(bench_events(batches * aws.BATCH_WRITE_LIMIT, name))
    ceilings["dynamodb BatchWriteItem items/s"] = _rate(
        lambda w, call: aws.batch_write_items(clients["dynamodb"][w], name, items[
            (call * workers + w) % batches * aws.BATCH_WRITE_LIMIT:][:aws.BATCH_WRITE_LIMIT]), seconds, workers)
    body = os.urandom(OBJECT_BYTES)
    ceilings["s3 PutObject objects/s"] = _rate(
        lambda w, call: bool(clients["s3"][w].put_object(Bucket=name, Key=f"o/{w}/{call}", Body=body)), seconds, workers)
    return ceilings


def print_emulator_ceilings(endpoints, seconds: float = 4.0) -> dict[str, float]:
    """Measure `emulator_ceilings` and print one line per service, so a benchmark that misses can
    say which of the emulator's services capped it."""
    ceilings = emulator_ceilings(endpoints, seconds)
    for what, rate in ceilings.items():
        print(f"emulator ceiling: {what:<32} {rate:>8,.0f}")
    return ceilings
