"""The local Dagster instance `appdata up` writes: one warehouse slot, crashed runs' slots freed."""

import shutil
from pathlib import Path

import dagster as dg

from appdata.local.instance import LOCAL_TEMPLATE


def test_local_instance_config_limits_the_warehouse_pool_and_frees_crashed_runs(tmp_path: Path):
    shutil.copy(LOCAL_TEMPLATE, tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert "MONITORING" in instance.get_required_daemon_types()
    finally:
        instance.dispose()
