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
        self.endpoint = self._stack.enter_context(emulator_process())
        dagster_home = self.home / "dagster"
        dagster_home.mkdir(parents=True)
        shutil.copy(REPO / "appdata" / "local" / "dagster_local.yaml", dagster_home / "dagster.yaml")
        env = {
            "APPDATA_HOME": str(self.home),
            "DAGSTER_HOME": str(dagster_home),
            "APPDATA_AWS_ENDPOINT_URL": self.endpoint,
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

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self.home, ignore_errors=True)
