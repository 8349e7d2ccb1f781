"""Shared helpers of the reliability suite: short in CI, full with APPDATA_RELIABILITY_FULL=1."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest

FULL = os.environ.get("APPDATA_RELIABILITY_FULL", "") == "1"


def scale(short: Any, full: Any) -> Any:
    """The short figure in CI, the full one under APPDATA_RELIABILITY_FULL=1."""
    return full if FULL else short


def report(what: str, **figures: Any) -> None:
    """Print what a test tried, so `pytest -s` (and the README figures) show it."""
    print(f"\n[reliability] {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def make_record(n: int, *, day: str | None = None, user_id: int | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid event record; `n` makes it distinct (and its derived event_id stable)."""
    record = {
        "user_id": user_id or 100_001 + n % 1000,
        "name": f"Test Person {n}",
        "location": "Ohio",
        "age": 20 + n % 50,
        "app": f"App {n}",
        "category": "GAME",
        "rating": 4.1,
        "reviews": 100 + n,
        "size_mb": 12.5,
        "installs": 10000,
        "type": "Free",
        "price": 0.0,
        "content_rating": "Everyone",
        "genres": "Arcade",
        "last_updated": "2018-01-07",
        "current_ver": "1.0",
        "android_ver": "4.1 and up",
        "minutes_spent": n % 120,
        "download_date": day or dt.date.today().isoformat(),
    }
    record.update(overrides)
    return record


def put_dead_letter(s3_client, bucket: str, source: str, day: str, name: str, letters: list[dict]) -> str:
    """Write a rejected object with the pipeline's own dead-letter writer."""
    from appdata.contract import deadletters

    lines = [deadletters.letter(source, row=i, rejected_at="2024-01-01T00:00:00Z", **letter)
             for i, letter in enumerate(letters, start=1)]
    (key,) = deadletters.write(s3_client, bucket, source, name, lines, lambda _: day)
    return key


@pytest.fixture()
def s3(provisioned):
    return provisioned["s3"].get_client()


# ------------------------------------------------------------------ batch path helpers

BATCH_ROWS_PER_DAY = 60


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


class BatchWorld:
    """The real batch assets on one Dagster instance: client data, landing, ETL, warehouse."""

    def __init__(self, settings, instance):
        import dagster as dg

        from appdata.defs.batch.assets import curated_batch, downloads_batch, landing_batch
        from appdata.defs.resources import build_resources
        from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_app_batch_client_data, users_batch

        self.dg = dg
        self.settings = settings
        self.instance = instance
        self.resources = build_resources(settings)
        self.sources = [playstore_apps_raw, playstore_apps, users_batch]
        self.client = users_app_batch_client_data
        self.landing, self.curated, self.warehouse = landing_batch, curated_batch, downloads_batch
        self.all = self.sources + [self.client, self.landing, self.curated, self.warehouse]
        result = dg.materialize(self.sources, instance=instance, resources=self.resources)
        assert result.success

    def run(self, selection: list, first: str, last: str, *, ok: bool = True, config: dict | None = None):
        result = self.dg.materialize(self.all, selection=selection, instance=self.instance, resources=self.resources,
                                     tags=range_tags(first, last), raise_on_error=False, run_config=config)
        assert result.success == ok, [e.message for e in result.all_events if e.is_failure]
        return result

    def client_config(self, rows: int = BATCH_ROWS_PER_DAY) -> dict:
        return {"ops": {"users_app_batch_client_data": {"config": {"rows_per_day": rows}}}}

    def load(self, first: str, last: str, rows: int = BATCH_ROWS_PER_DAY):
        """Client data, landing, ETL and warehouse for the days first..last, as one run."""
        return self.run([self.client, self.landing, self.curated, self.warehouse], first, last,
                        config=self.client_config(rows))


@pytest.fixture(scope="module")
def module_env(tmp_path_factory, emulator_endpoint):
    """Like appdata_env, for a whole module (its tests use distinct days), provisioned once."""
    import uuid

    from appdata.config import Settings
    from appdata.local.provision import provision
    from appdata.defs.resources import build_resources

    suffix = uuid.uuid4().hex[:8]
    home = tmp_path_factory.mktemp("reliability") / "home"
    (home / "dagster").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "APPDATA_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
            "APPDATA_AWS_ENDPOINT_URL": emulator_endpoint, "APPDATA_AWS_REGION": "us-east-1",
            "APPDATA_BUCKET": f"appdata-rel-{suffix}", "APPDATA_STREAM": f"appdata-rel-{suffix}",
            "APPDATA_TABLE": f"appdata-rel-{suffix}", "APPDATA_API_KEYS": f"rel-key-{suffix}",
        }.items():
            patch.setenv(key, value)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "APPDATA_PLAYSTORE_CSV",
                    "APPDATA_WAREHOUSE_URL", "APPDATA_WAREHOUSE_PASSWORD"):
            patch.delenv(key, raising=False)
        settings = Settings.from_env()
        provision(build_resources(settings))
        yield settings


@pytest.fixture(scope="module")
def batch_world(module_env):
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield BatchWorld(module_env, instance)


# ------------------------------------------------------------------ stream path helpers


class LocalApi:
    """The real ingest API (create_app) served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, settings, key: str):
        import threading

        import uvicorn

        from appdata.api.app import create_app
        from appdata.local.emulator import free_port

        self.key = key
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        # log_config=None: uvicorn's loggers propagate to the root, so tests see every line it logs.
        config = uvicorn.Config(create_app(settings, api_keys=[key]), host="127.0.0.1", port=port,
                                log_config=None, log_level="debug", access_log=True)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="local-api", daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "local API did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def local_api(module_env):
    import os

    api = LocalApi(module_env, os.environ["APPDATA_API_KEYS"])
    yield api
    api.stop()


def post(api: LocalApi, records: list[dict], client=None) -> tuple[int, dict]:
    import httpx

    own = client or httpx.Client(timeout=60)
    try:
        response = own.post(f"{api.url}/v1/downloads", json=records, headers={"x-api-key": api.key})
        return response.status_code, response.json()
    finally:
        if client is None:
            own.close()


def shard_ranges(kinesis, stream: str, after: dict | None = None) -> list[tuple[str, str, str]]:
    """(shard, first, last) of everything in the stream (after the given positions), per shard."""
    ranges = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        position = (after or {}).get(shard_id)
        kwargs = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": position} if position
                  else {"ShardIteratorType": "TRIM_HORIZON"})
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **kwargs)["ShardIterator"]
        seqs = []
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            seqs += [r["SequenceNumber"] for r in page["Records"]]
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        if seqs:
            ranges.append((shard_id, seqs[0], seqs[-1]))
    return ranges


def split_range(kinesis, stream: str, shard_id: str, first: str, last: str, parts: int) -> list[tuple[str, str, str]]:
    """One shard range cut into `parts` consecutive ranges, as successive sensor ticks would."""
    from appdata.stream.drain import read_shard

    seqs = [r["SequenceNumber"] for r in read_shard(kinesis, stream, shard_id, at=first, until=last,
                                                     max_records=10**9).records]
    size = max(1, -(-len(seqs) // parts))
    return [(shard_id, seqs[i], seqs[min(i + size, len(seqs)) - 1]) for i in range(0, len(seqs), size)]


def stream_tail(kinesis, stream: str) -> dict:
    """The last sequence number of each shard now: ranges after it are what a test added."""
    return {shard: last for shard, _, last in shard_ranges(kinesis, stream)}
