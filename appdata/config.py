"""All configuration in one place: environment variables with local defaults.

Every knob the pipeline has is read here and nowhere else, so that moving from the
embedded defaults (emulator on loopback, DuckDB file) to real AWS and Redshift is a matter
of exporting variables, never of editing code. `.env.example` documents each variable; a
`.env` in the current directory is read too (`load_env_file`, called by `Settings.from_env()`),
exported variables winning over it.
Secrets (AWS keys, warehouse password, API keys) are not given defaults here; resources
receive them through `dagster.EnvVar` or the standard AWS credential chain.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_EMULATOR_PORT = 4566
# The services the pipeline calls, each at an endpoint of its own; every other service (CloudFormation,
# Secrets Manager) is reached at APPDATA_AWS_ENDPOINT_URL. Locally each has its own emulator process,
# on the emulator's base port plus this offset (the others on the base port itself).
EMULATOR_PORT_OFFSETS = {"s3": 1, "kinesis": 2, "dynamodb": 3}
ENDPOINT_VARIABLE = "APPDATA_AWS_ENDPOINT_URL"
ENV_FILE_VARIABLE = "APPDATA_ENV_FILE"  # path of the env file (default .env, relative to the cwd); empty: none
_SHELL_VALUES = "_APPDATA_SHELL_VALUES"  # exported values that a .env also sets, for child processes
_env_files_read: set[Path] = set()
_shell_values_restored = False


def load_env_file() -> Path | None:
    """Read `./.env` (or `$APPDATA_ENV_FILE`) into `os.environ`, exported variables taking precedence.

    The one place a .env is read. `Settings.from_env()` calls it, so the `appdata` CLI, the
    Dagster code location and every process they start (which inherit `os.environ`) see the
    same values, secrets read through `dagster.EnvVar` included. Each file is read once per
    process. Returns the file read, or None.

    Dagster's own commands (`dagster dev`, which `appdata up` runs, and `dagster asset ...`)
    also load ./.env and let it override exported variables in their processes; so the values
    exported over the file's are handed down in `_APPDATA_SHELL_VALUES` and put back here.
    """
    global _shell_values_restored
    shell = json.loads(os.environ.get(_SHELL_VALUES) or "{}")
    if not _shell_values_restored:  # once: later changes a process makes to its own environment stand
        os.environ.update(shell)
        _shell_values_restored = True
    name = os.environ.get(ENV_FILE_VARIABLE, ".env")
    if not name:
        return None
    path = Path(name).expanduser().resolve()
    if path in _env_files_read:
        return path
    if not path.is_file():
        return None
    from dotenv import dotenv_values

    for key, value in dotenv_values(path).items():
        if value is None:
            continue
        if key in os.environ:
            if os.environ[key] != value:
                shell[key] = os.environ[key]
        else:
            os.environ[key] = value
    if shell:
        os.environ[_SHELL_VALUES] = json.dumps(shell, sort_keys=True)
    _env_files_read.add(path)
    return path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None else value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:  # a clear message beats a bare int() traceback
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def is_loopback_endpoint(url: str | None) -> bool:
    """True when `url` points at this machine (the local emulator), never at real AWS."""
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_variable(service: str) -> str:
    """The variable naming a service's endpoint: APPDATA_AWS_ENDPOINT_URL_S3, ..._KINESIS, ..._DYNAMODB."""
    return f"{ENDPOINT_VARIABLE}_{service.upper()}"


@dataclass(frozen=True)
class AwsEndpoints:
    """Where boto3 reaches each AWS service; None (an empty variable) means the real AWS endpoint.

    The one home of the endpoint rules. Each of S3, Kinesis and DynamoDB reads its own variable
    (APPDATA_AWS_ENDPOINT_URL_S3, ...); unset, it falls back to APPDATA_AWS_ENDPOINT_URL when that
    is set (so one variable still points everything at one place, real AWS included), else to
    its own local emulator port. Every other service is at APPDATA_AWS_ENDPOINT_URL.
    """

    s3: str | None
    kinesis: str | None
    dynamodb: str | None
    others: str | None

    @classmethod
    def from_env(cls, emulator_port: int = DEFAULT_EMULATOR_PORT) -> "AwsEndpoints":
        general = os.environ.get(ENDPOINT_VARIABLE)
        local = cls.emulator(emulator_port)

        def chosen(variable: str, local_url: str | None) -> str | None:
            value = os.environ.get(variable, general if general is not None else local_url)
            return value or None  # empty: real AWS

        return cls(others=chosen(ENDPOINT_VARIABLE, local.others),
                   **{service: chosen(endpoint_variable(service), local.url(service)) for service in EMULATOR_PORT_OFFSETS})

    @classmethod
    def emulator(cls, base_port: int, host: str = "127.0.0.1") -> "AwsEndpoints":
        """The local emulator's default layout: the others on `base_port`, each service at its offset."""
        return cls(others=f"http://{host}:{base_port}",
                   **{service: f"http://{host}:{base_port + offset}" for service, offset in EMULATOR_PORT_OFFSETS.items()})

    @classmethod
    def everything_at(cls, url: str | None) -> "AwsEndpoints":
        """Every service at one endpoint (one emulator process serving all, or real AWS with None)."""
        return cls(s3=url, kinesis=url, dynamodb=url, others=url)

    def url(self, service: str) -> str | None:
        """The endpoint of a boto3 service name ("s3", "kinesis", "cloudformation", ...)."""
        return getattr(self, service) if service in EMULATOR_PORT_OFFSETS else self.others

    def by_service(self) -> dict[str, str | None]:
        return {**{service: self.url(service) for service in EMULATOR_PORT_OFFSETS}, "others": self.others}

    def environment(self) -> dict[str, str]:
        """The variables that configure exactly these endpoints in another process ("" = real AWS)."""
        env = {endpoint_variable(service): self.url(service) or "" for service in EMULATOR_PORT_OFFSETS}
        return {ENDPOINT_VARIABLE: self.others or "", **env}

    @property
    def any_loopback(self) -> bool:
        return any(is_loopback_endpoint(url) for url in self.by_service().values())


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment; build one with `Settings.from_env()`."""

    home: Path
    bucket: str
    stream: str
    table: str
    lease_table: str
    warehouse_url: str
    lake_catalog: str
    aws_endpoints: AwsEndpoints
    aws_region: str
    playstore_csv: str | None
    timezone: str
    batch_start_date: str
    batch_rows_per_day: int | None
    seed: int
    preferences: str
    api_url: str
    api_host: str
    api_port: int

    @classmethod
    def from_env(cls) -> "Settings":
        load_env_file()
        home = Path(_env("APPDATA_HOME", str(Path.home() / ".appdata"))).expanduser().resolve()
        api_host = _env("APPDATA_API_HOST", "127.0.0.1")
        api_port = _env_int("APPDATA_API_PORT", 8000)
        rows_per_day = _env_int("APPDATA_BATCH_ROWS_PER_DAY", 0)
        table = _env("APPDATA_TABLE", "appdata-user-downloads")
        return cls(
            home=home,
            bucket=_env("APPDATA_BUCKET", "appdata-lake"),
            stream=_env("APPDATA_STREAM", "appdata-downloads"),
            table=table,
            lease_table=_env("APPDATA_LEASE_TABLE", f"{table}-leases"),
            warehouse_url=_env("APPDATA_WAREHOUSE_URL", f"duckdb:///{home / 'warehouse.duckdb'}"),
            lake_catalog=_env("APPDATA_LAKE_CATALOG", f"sqlite:///{home / 'lake-catalog.db'}"),
            aws_endpoints=AwsEndpoints.from_env(_env_int("APPDATA_EMULATOR_PORT", DEFAULT_EMULATOR_PORT)),
            aws_region=_env("APPDATA_AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
            playstore_csv=_env("APPDATA_PLAYSTORE_CSV", "") or None,
            timezone=_env("APPDATA_TIMEZONE", "UTC"),
            batch_start_date=_env("APPDATA_BATCH_START_DATE", "2020-01-01"),
            batch_rows_per_day=rows_per_day or None,
            seed=_env_int("APPDATA_SEED", 42),
            preferences=_env("APPDATA_USER_PREFERENCES", "taste"),
            api_url=_env("APPDATA_API_URL", f"http://{api_host}:{api_port}"),
            api_host=api_host,
            api_port=api_port,
        )

    @property
    def uses_emulator(self) -> bool:
        """Some service is configured on this machine: the local stack serves it."""
        return self.aws_endpoints.any_loopback

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")

    @property
    def api_key_file(self) -> Path:
        """The local stack's API key, written once by `appdata up` when APPDATA_API_KEYS is unset."""
        return self.home / "api-key"

    @property
    def client_dir(self) -> Path:
        """Where the simulated clients keep their own files (not our AWS)."""
        return self.home / "client"


def emulator_credentials() -> dict[str, str]:
    """Placeholder credentials for the local emulator, which accepts any signature.

    Used only when the endpoint is loopback and the environment holds no AWS credentials;
    real AWS always goes through boto3's own credential chain.
    """
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return {}
    return {"aws_access_key_id": "emulator", "aws_secret_access_key": "emulator"}


def aws_client_kwargs(settings: Settings, service: str) -> dict:
    """Region, the service's endpoint (and, on the loopback emulator only, placeholder keys) for a
    boto3 client of `service`.

    Dagster resources and the Lambda API both build their clients from this (through
    `appdata.aws.client`), so they always talk to the same place; it imports no Dagster, which
    the Lambda package does not carry.
    """
    endpoint = settings.aws_endpoints.url(service)
    kwargs: dict = {"region_name": settings.aws_region, "endpoint_url": endpoint}
    if is_loopback_endpoint(endpoint):
        kwargs.update(emulator_credentials())
        kwargs["use_ssl"] = False
    return kwargs


def parse_api_keys(raw: str | None) -> list[str]:
    """API keys from their comma-separated form (as in `APPDATA_API_KEYS`)."""
    return [key.strip() for key in (raw or "").split(",") if key.strip()]


def api_keys_from_env() -> list[str]:
    """API keys accepted by the ingest API: `APPDATA_API_KEYS`, comma separated."""
    return parse_api_keys(os.environ.get("APPDATA_API_KEYS"))


def client_api_key(settings: Settings) -> str | None:
    """The key a client on this machine sends as x-api-key: the first of APPDATA_API_KEYS, else
    the local stack's key file (so commands work beside `appdata up` with no variable set)."""
    keys = api_keys_from_env()
    if keys:
        return keys[0]
    if settings.api_key_file.is_file():
        return settings.api_key_file.read_text(encoding="utf-8").strip() or None
    return None
