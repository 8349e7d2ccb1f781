"""The environment the local stack's processes share: its home, the emulator's endpoints, Dagster's home, the API key."""

from __future__ import annotations

import os
import secrets

from appdata.config import Settings, client_api_key


def _local_api_key(settings: Settings) -> str:
    """The local stack's API key: APPDATA_API_KEYS, else one generated once under APPDATA_HOME."""
    key = client_api_key(settings)
    if key is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(24)
        settings.api_key_file.write_text(key)
        settings.api_key_file.chmod(0o600)
    return key


def local_environment(settings: Settings) -> dict[str, str]:
    """Environment for the local stack's processes: each service's endpoint, Dagster home, API key."""
    env = dict(os.environ)
    env.setdefault("APPDATA_HOME", str(settings.home))
    for variable, url in settings.aws_endpoints.environment().items():
        env.setdefault(variable, url)
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    env["APPDATA_API_KEYS"] = env.get("APPDATA_API_KEYS") or _local_api_key(settings)
    return env
