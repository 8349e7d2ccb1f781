"""Configuration: a .env in the current directory is read, exported variables win over it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appdata import config
from appdata.config import Settings

KEYS = ("APPDATA_BUCKET", "APPDATA_SEED", "APPDATA_TIMEZONE", "APPDATA_WAREHOUSE_PASSWORD", config._SHELL_VALUES)


@pytest.fixture()
def fresh_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd of its own, no variable of KEYS set, .env reading on, as in a new process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_FILE_VARIABLE)  # conftest turns .env reading off for the suite
    for key in KEYS:
        # setenv first: delenv of an absent variable records nothing, and what the .env then puts
        # into os.environ would outlive the test (a warehouse password in later tests' engines)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setattr(config, "_env_files_read", set())
    monkeypatch.setattr(config, "_shell_values_restored", False)
    (tmp_path / ".env").write_text(
        "# a comment\n"
        "APPDATA_BUCKET=bucket-from-dotenv\n"  # pragma: allowlist secret
        "APPDATA_SEED=7\n"
        'APPDATA_TIMEZONE="Europe/Paris"\n'
        "APPDATA_WAREHOUSE_PASSWORD=secret-from-dotenv\n"  # pragma: allowlist secret
    )
    return tmp_path


def test_settings_read_the_dotenv_of_the_current_directory(fresh_process):
    settings = Settings.from_env()
    assert settings.bucket == "bucket-from-dotenv"
    assert settings.seed == 7
    assert settings.timezone == "Europe/Paris"
    # into os.environ: dagster.EnvVar secrets and child processes see it too
    assert os.environ["APPDATA_WAREHOUSE_PASSWORD"] == "secret-from-dotenv"  # pragma: allowlist secret
    assert config._SHELL_VALUES not in os.environ


def test_an_exported_variable_wins_over_the_dotenv(fresh_process, monkeypatch):
    monkeypatch.setenv("APPDATA_SEED", "99")
    settings = Settings.from_env()
    assert settings.seed == 99
    assert settings.bucket == "bucket-from-dotenv"
    assert json.loads(os.environ[config._SHELL_VALUES]) == {"APPDATA_SEED": "99"}


def test_a_child_that_dagster_gave_the_dotenv_values_gets_the_exported_ones_back(fresh_process, monkeypatch):
    """`dagster dev` (run by `appdata up`) loads ./.env over the exported variables for its
    processes; the code location puts the exported values back."""
    monkeypatch.setenv("APPDATA_SEED", "99")
    Settings.from_env()  # the `appdata` process
    handed_down = dict(os.environ)
    # a code-location process: the environment inherited, then .env applied over it by Dagster
    monkeypatch.setattr(config, "_env_files_read", set())
    monkeypatch.setattr(config, "_shell_values_restored", False)
    monkeypatch.setenv(config._SHELL_VALUES, handed_down[config._SHELL_VALUES])
    monkeypatch.setenv("APPDATA_SEED", "7")
    assert Settings.from_env().seed == 99
    monkeypatch.setenv("APPDATA_SEED", "5")  # a later change the process makes itself stands
    assert Settings.from_env().seed == 5


def test_no_dotenv_or_reading_turned_off_leaves_the_defaults(fresh_process, monkeypatch):
    monkeypatch.setenv(config.ENV_FILE_VARIABLE, "")
    assert Settings.from_env().bucket == "appdata-lake"
    monkeypatch.delenv(config.ENV_FILE_VARIABLE)
    (fresh_process / ".env").unlink()
    assert config.load_env_file() is None
    assert Settings.from_env().bucket == "appdata-lake"


def test_another_env_file_can_be_named(fresh_process, monkeypatch):
    (fresh_process / "staging.env").write_text("APPDATA_BUCKET=bucket-from-staging\n")  # pragma: allowlist secret
    monkeypatch.setenv(config.ENV_FILE_VARIABLE, "staging.env")
    assert Settings.from_env().bucket == "bucket-from-staging"


ENDPOINT_VARIABLES = (config.ENDPOINT_VARIABLE, *(config.endpoint_variable(s) for s in config.EMULATOR_PORT_OFFSETS))


@pytest.fixture()
def no_endpoints(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in (*ENDPOINT_VARIABLES, "APPDATA_EMULATOR_PORT", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_by_default_each_service_has_its_own_emulator_port(no_endpoints):
    no_endpoints.setenv("APPDATA_EMULATOR_PORT", "5000")
    endpoints = Settings.from_env().aws_endpoints
    assert endpoints.by_service() == {"s3": "http://127.0.0.1:5001", "kinesis": "http://127.0.0.1:5002",
                                      "dynamodb": "http://127.0.0.1:5003", "others": "http://127.0.0.1:5000"}


def test_services_fall_back_to_the_general_endpoint_when_it_is_set(no_endpoints):
    no_endpoints.setenv("APPDATA_AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    no_endpoints.setenv("APPDATA_AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:7000")
    endpoints = Settings.from_env().aws_endpoints
    assert endpoints.by_service() == {"s3": "http://127.0.0.1:4566", "kinesis": "http://127.0.0.1:7000",
                                      "dynamodb": "http://127.0.0.1:4566", "others": "http://127.0.0.1:4566"}


def test_empty_means_real_aws_for_all_or_for_one_service(no_endpoints):
    no_endpoints.setenv("APPDATA_AWS_ENDPOINT_URL", "")
    real = Settings.from_env()
    assert set(real.aws_endpoints.by_service().values()) == {None} and not real.uses_emulator
    assert config.aws_client_kwargs(real, "kinesis") == {"region_name": real.aws_region, "endpoint_url": None}

    no_endpoints.delenv("APPDATA_AWS_ENDPOINT_URL")
    no_endpoints.setenv("APPDATA_AWS_ENDPOINT_URL_S3", "")
    mixed = Settings.from_env()
    assert mixed.aws_endpoints.s3 is None and mixed.uses_emulator
    assert "aws_access_key_id" not in config.aws_client_kwargs(mixed, "s3")  # real AWS: boto3's own chain
    local = config.aws_client_kwargs(mixed, "dynamodb")
    assert local["endpoint_url"] == mixed.aws_endpoints.dynamodb and local["aws_access_key_id"] == "emulator"


def test_the_endpoints_environment_configures_the_same_endpoints_elsewhere(no_endpoints):
    endpoints = config.AwsEndpoints(s3="http://127.0.0.1:1", kinesis=None, dynamodb="http://127.0.0.1:3",
                                    others="http://127.0.0.1:4")
    for variable, value in endpoints.environment().items():
        no_endpoints.setenv(variable, value)
    assert Settings.from_env().aws_endpoints == endpoints
