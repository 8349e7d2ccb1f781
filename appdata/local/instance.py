"""The local Dagster instance: its config file, and the instance local tools run on.

`appdata up` writes `$DAGSTER_HOME/dagster.yaml` from `dagster_local.yaml` (pool "warehouse"
serializes the DuckDB writers); the demos run on that same instance when it exists, so their
runs show in the UI and queue with the daemon's, and on a throwaway one otherwise.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from appdata.config import Settings

LOCAL_TEMPLATE = Path(__file__).resolve().parent / "dagster_local.yaml"


def write_dagster_yaml(settings: Settings) -> Path:
    """Local Dagster instance config: warehouse writers serialized, telemetry off."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    template = LOCAL_TEMPLATE.read_text()
    if not target.exists() or target.read_text() != template:
        target.write_text(template)
    return target


def write_workspace_yaml(settings: Settings) -> Path:
    """The workspace `appdata up` serves: the code location named `appdata`, as in the repo's
    workspace.yaml and [tool.dagster] (dagster dev -m would name it after the module)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "workspace.yaml"
    target.write_text("load_from:\n  - python_module:\n      module_name: appdata.definitions\n"
                      "      location_name: appdata\n")
    return target


def local_instance(settings: Settings) -> dg.DagsterInstance:
    """The local instance when $DAGSTER_HOME is set up, else an ephemeral one."""
    home = settings.dagster_home
    if (home / "dagster.yaml").exists():
        return dg.DagsterInstance.from_config(str(home))
    return dg.DagsterInstance.ephemeral()
