"""Configuration reaches bodies through resources built from the environment; optional secrets are
read through dg.EnvVar when used, so an unset one is None instead of a failed run."""

from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy.engine import make_url

from appdata.config import Settings
from appdata.defs.resources import IngestApiResource, WarehouseResource, build_resources


def test_resources_carry_the_settings_the_bodies_used_to_read(tmp_path, monkeypatch):
    monkeypatch.setenv("APPDATA_HOME", str(tmp_path))
    monkeypatch.setenv("APPDATA_SEED", "7")
    monkeypatch.setenv("APPDATA_BATCH_ROWS_PER_DAY", "12")
    monkeypatch.setenv("APPDATA_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("APPDATA_API_URL", "http://127.0.0.1:9")
    resources = build_resources(Settings.from_env())
    clients = resources["clients"]
    assert (clients.client_path, clients.seed, clients.rows_per_day, clients.timezone) == (
        tmp_path.resolve() / "client", 7, 12, "Europe/Paris")
    assert resources["ingest_api"].url == "http://127.0.0.1:9"
    assert resources["local_report"].home_path == Path(tmp_path).resolve()
    assert resources["io_manager"].s3 is resources["s3"]


@dg.asset
def warehouse_password(warehouse: WarehouseResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"password": str(make_url(warehouse.get_engine().url).password)})


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_the_warehouse_password_is_read_when_connecting_and_may_be_unset(password, tmp_path, monkeypatch):
    monkeypatch.delenv("APPDATA_WAREHOUSE_PASSWORD", raising=False)
    resources = {"warehouse": WarehouseResource(url=f"duckdb:///{tmp_path / 'w.duckdb'}")}  # bound while unset
    if password:
        monkeypatch.setenv("APPDATA_WAREHOUSE_PASSWORD", password)  # set only where the run executes
    result = dg.materialize([warehouse_password], resources=resources)
    assert result.success
    assert result.asset_materializations_for_node("warehouse_password")[0].metadata["password"].value == str(password)


def test_the_client_api_key_is_the_first_of_the_variable_and_required_when_posting(monkeypatch):
    api = IngestApiResource(url="http://127.0.0.1:9")
    monkeypatch.setenv("APPDATA_API_KEYS", " first , second")
    assert api.api_key() == "first"
    monkeypatch.delenv("APPDATA_API_KEYS")
    with pytest.raises(RuntimeError, match="APPDATA_API_KEYS is not set"):
        api.api_key()
