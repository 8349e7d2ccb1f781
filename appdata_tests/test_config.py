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
        monkeypatch.delenv(key, raising=False)  # and restores each of them after the test
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
