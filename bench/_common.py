"""Shared set-up of the benchmarks: an emulator subprocess, a temp APPDATA_HOME, provisioning."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class BenchEnvironment:
    """Emulator in its own process (its CPU and memory are not the pipeline's), a temp home."""

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
