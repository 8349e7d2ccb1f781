"""Shared fixtures: a real emulator server on a free port, a real PostgreSQL, real files.

Nothing of ours is patched: tests point the same boto3 code at the emulator over HTTP by
setting the environment, exactly as a user would: S3, Kinesis and DynamoDB each at the endpoint
of its own emulator process, as `appdata up` runs them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from appdata.config import AwsEndpoints, Settings
from appdata.local.emulator import emulator_process
from appdata.defs.resources import build_resources
from appdata_tests.support import realdata

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_BASE_URL = os.environ.get("APPDATA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A developer's ./.env must not leak into the tests (nor into the processes they start):
# each test sets its own environment. appdata_tests/test_config.py turns it back on.
os.environ["APPDATA_ENV_FILE"] = ""


# The servers a test's fixtures start, by the marker that says so: `-m "not emulator and not postgres"`
# selects the unit tier (no server at all). Tests that start an emulator of their own mark themselves.
SERVER_MARKERS = {"emulator_endpoints": "emulator", "single_process_endpoints": "emulator",
                  "postgres_engine": "postgres",
                  # not a server, the same rule: whatever takes the real Kaggle file is `-m realdata`
                  "real_catalogue": "realdata"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in SERVER_MARKERS.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)


@pytest.fixture()
def lambda_event_loop():
    """The main thread as Lambda's runtime gives it to Mangum: `asyncio.get_event_loop()` answers.
    Any earlier test's `asyncio.run()` (Dagster's evaluators, GraphQL test clients) leaves this
    process's main thread without one, and the handler then fails for a reason Lambda never has."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="session")
def emulator_endpoints() -> AwsEndpoints:
    """The emulator for the whole session: one server process per service, on free loopback ports."""
    with emulator_process() as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def single_process_endpoints() -> AwsEndpoints:
    """One emulator process serving every service (started only for the tests that ask for it)."""
    with emulator_process(single_process=True) as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def postgres_engine() -> sa.Engine:
    """The machine's PostgreSQL; skipped where absent, but required when CI=true."""
    engine = sa.create_engine(PG_BASE_URL)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not here"
        engine.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {PG_BASE_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE_URL}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture()
def postgres_url(postgres_engine: sa.Engine) -> str:
    """A fresh schema per test, reached through search_path in the URL."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture()
def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


# Set elsewhere (a developer's shell, CI), these would point a test away from its own emulator names.
UNSET_FOR_TESTS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "APPDATA_PLAYSTORE_CSV",
                   "APPDATA_LAKE_CATALOG", "APPDATA_LAKE_CATALOG_PASSWORD",
                   "APPDATA_WAREHOUSE_URL", "APPDATA_WAREHOUSE_PASSWORD")
# Loopback port 1: nothing listens there, so a test without a server fails at once if it calls AWS.
NO_SERVER_ENDPOINTS = AwsEndpoints.everything_at("http://127.0.0.1:1")


def _use_test_environment(patch: pytest.MonkeyPatch, endpoints: AwsEndpoints, home: Path, prefix: str) -> Settings:
    """Give a test (or a module) its own home, bucket, stream, table and API key; its Settings."""
    suffix = uuid.uuid4().hex[:8]
    values = {
        "APPDATA_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        **endpoints.environment(),
        "APPDATA_AWS_REGION": "us-east-1",
        "APPDATA_BUCKET": f"{prefix}-{suffix}",
        "APPDATA_STREAM": f"{prefix}-{suffix}",
        "APPDATA_TABLE": f"{prefix}-{suffix}",
        "APPDATA_API_KEYS": f"{prefix}-key-{suffix}",
    }
    for key, value in values.items():
        patch.setenv(key, value)
    for key in UNSET_FOR_TESTS:
        patch.delenv(key, raising=False)
    (home / "dagster").mkdir(parents=True)
    return Settings.from_env()


@pytest.fixture()
def appdata_env(tmp_path: Path, emulator_endpoints: AwsEndpoints, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Environment for one test: its own home, bucket, stream and table on the shared emulator."""
    return _use_test_environment(monkeypatch, emulator_endpoints, tmp_path / "home", "appdata-test")


@pytest.fixture()
def single_process_env(tmp_path: Path, single_process_endpoints: AwsEndpoints,
                       monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Like appdata_env, every service in one emulator process: what a CloudFormation deploy into
    the emulator needs, since moto creates the stack's resources in its own process's backends."""
    return _use_test_environment(monkeypatch, single_process_endpoints, tmp_path / "home", "appdata-test")


@pytest.fixture()
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The same environment with no server behind it: for tests that build settings, resources or
    definitions but never call AWS (the unit tier)."""
    return _use_test_environment(monkeypatch, NO_SERVER_ENDPOINTS, tmp_path / "home", "appdata-unit")


@pytest.fixture()
def provisioned(appdata_env: Settings) -> dict:
    """Resources for this test's names, with bucket, stream, table and warehouse created."""
    from appdata.local.provision import provision

    resources = build_resources(appdata_env)
    provision(resources)
    return resources


@pytest.fixture()
def real_catalogue() -> Path:
    """The real Kaggle file (APPDATA_PLAYSTORE_CSV, else ../shared/data/googleplaystore.csv); skipped
    naming both when absent. The one place tests learn where it is: appdata_tests/support/realdata.py."""
    path = realdata.real_catalogue_path()
    if path is None:
        pytest.skip(realdata.missing_reason())
    return path


@pytest.fixture(scope="module")
def module_env(tmp_path_factory, emulator_endpoints) -> Settings:
    """Like appdata_env, for a whole module (its tests use distinct days), provisioned once."""
    from appdata.local.provision import provision

    with pytest.MonkeyPatch.context() as patch:
        settings = _use_test_environment(patch, emulator_endpoints, tmp_path_factory.mktemp("module") / "home",
                                         "appdata-mod")
        provision(build_resources(settings))
        yield settings


@pytest.fixture(scope="module")
def batch_world(module_env):
    """The real batch assets on an instance of their own, the sources materialized once per module."""
    import dagster as dg

    from appdata_tests.support.batch import BatchWorld

    with dg.instance_for_test() as instance:
        yield BatchWorld(module_env, instance)


@pytest.fixture()
def s3(provisioned):
    """The lake bucket's S3 client of a provisioned test."""
    return provisioned["s3"].get_client()
