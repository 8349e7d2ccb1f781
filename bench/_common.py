"""Shared set-up of the benchmarks: an emulator subprocess, a temp APPDATA_HOME, provisioning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class BenchEnvironment:
    """Emulator in its own process (its CPU and memory are not the pipeline's), a temp home."""

    def __init__(self, name: str, extra_env: dict[str, str] | None = None):
        from appdata.emulator import free_port, wait_until_up

        self.home = Path(tempfile.mkdtemp(prefix=f"appdata-{name}-"))
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.emulator = subprocess.Popen([sys.executable, "-m", "appdata.cli", "emulator", "--port", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(self.endpoint)
        dagster_home = self.home / "dagster"
        dagster_home.mkdir(parents=True)
        shutil.copy(REPO / "appdata" / "dagster_local.yaml", dagster_home / "dagster.yaml")
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
        from appdata.provision import ensure_bucket
        from appdata.resources import build_resources
        from appdata.warehouse.loader import create_schema

        resources = build_resources(Settings.from_env())
        ensure_bucket(resources["s3"])
        engine = resources["warehouse"].get_engine()
        create_schema(engine)
        engine.dispose()
        return resources

    def close(self) -> None:
        self.emulator.terminate()
        try:
            self.emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.emulator.kill()
        shutil.rmtree(self.home, ignore_errors=True)
